"""LoRA in the trainer: only the adapters are trainable (gradients and optimizer state), the base weights are
bit-identical after training, checkpoints record the adapters and resume them, config errors are one line."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from stvl_jax.errors import ConfigError
from stvl_jax.train.trainer import Trainer

from .conftest import tiny_config

# adapters in the LLM and the ViT (Qwen3-VL tiny), dropout, two micro-batches per update
LORA = ["steps=4", "data.batch_size=8", "lora.rank=4", "lora.alpha=8", "lora.modules=all",
        "lora.targets=[q_proj,v_proj,o_proj,down_proj]", "optim.grad_accum_steps=2", "lora.dropout=0.1",
        "lora.lr=0.02", "optim.weight_decay=0", "optim.warmup_steps=0",
        "checkpoint.async_save=false"]  # no decay: an adapter that changes got a gradient


def _params(trainer):
    return {k: np.asarray(v) for k, v in jax.device_get(trainer.state.all_params()).items()}


@pytest.mark.slow
def test_only_adapters_train_and_resume_matches(tmp_path):

    cfg = tiny_config(tmp_path / "full", *LORA)
    trainer = Trainer(cfg)
    adapters = {k for k in trainer.spec.abstract if "/lora/" in k}
    assert adapters and set(trainer.state.params) == adapters  # the only differentiated tree
    assert not adapters & set(trainer.state.frozen)
    # optimizer state: Adam moments for the adapters and nothing shaped like a base parameter
    opt_leaves = jax.tree_util.tree_flatten_with_path(trainer.state.opt_state)[0]
    keyed = {getattr(p[-1], "key", None) for p, leaf in opt_leaves if np.ndim(leaf) > 0}
    assert keyed == adapters
    before = _params(trainer)
    summary = trainer.run()
    after = _params(trainer)
    assert np.isfinite(summary["loss"])
    for k in before:
        if k in adapters:
            assert not np.array_equal(before[k], after[k]), f"adapter {k} did not train"
        else:
            np.testing.assert_array_equal(before[k], after[k], err_msg=f"base parameter {k} changed")
    info = json.loads((tmp_path / "full/checkpoints/4/stvl_config.json").read_text())
    assert any(k.startswith("visual/blocks/") for k in adapters)
    assert info["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.1, "targets": list(cfg.lora.targets),
                            "modules": "all"}

    # stop at step 2, resume in a new trainer: the same adapters as the uninterrupted run (dropout keys too)
    cfg2 = tiny_config(tmp_path / "split", *LORA)
    Trainer(cfg2).run(until=2)
    resumed = Trainer(cfg2.replace(checkpoint={**cfg2.checkpoint.to_dict(), "resume": "required"}))
    assert resumed.resumed_from == 2
    resumed.run()
    again = _params(resumed)
    for k in adapters:
        np.testing.assert_allclose(again[k], after[k], rtol=0, atol=1e-6, err_msg=k)


def test_lora_config_errors_are_one_line(tmp_path):


    with pytest.raises(ConfigError) as e:
        Trainer(tiny_config(tmp_path / "a", "lora.targets=[q_proj,qkv_proj]"))
    msg = str(e.value)
    assert "\n" not in msg and "'qkv_proj'" in msg and "down_proj" in msg
    with pytest.raises(ConfigError, match="unknown key 'lora.rnk'"):
        tiny_config(tmp_path / "b", "lora.rnk=4")
    with pytest.raises(ConfigError, match="lora.modules"):
        tiny_config(tmp_path / "c", "lora.modules=decoder")
    with pytest.raises(ConfigError, match="lora.targets"):
        tiny_config(tmp_path / "d", "lora.targets=[]")


def test_lora_groups_and_optimizer_settings(tmp_path):
    """Adapters are group `lora` with `lora.lr`; base groups train only when named in lora.train_groups."""

    from stvl_jax.train import lora_train
    from stvl_jax.train.param_groups import group_of

    cfg = tiny_config(tmp_path, "lora.rank=2", "lora.lr=0.5", "lora.train_groups=[embed]")
    assert lora_train.trainable_groups(cfg) == ("lora", "embed")
    extra = lora_train.extra_groups(cfg)
    assert extra["lora"].lr == 0.5 and extra["embed"].lr == cfg.optim.groups.embed.lr
    assert group_of("language_model/layers/self_attn/q_proj/lora/a") == "lora"
    assert group_of("visual/blocks/mlp/fc1/lora/b") == "lora"
    assert group_of("language_model/layers/self_attn/q_proj/kernel") == "llm"
    assert lora_train.trainable_groups(tiny_config(tmp_path)) == ("merger", "llm", "embed")  # no lora: as before


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["qwen25vl_tiny"])  # Qwen3-VL's ViT adapters: the test above
def test_vision_adapters_train_through_the_vit(preset, tmp_path):
    """modules=all with dropout: adapters inside the scanned ViT (Qwen2.5-VL: window/full attention branches)
    and the LLM all receive updates (A from step 2 on, once B is non-zero); the base stays bit-identical."""
    cfg = tiny_config(tmp_path, "steps=3", "optim.weight_decay=0", "optim.warmup_steps=0", f"model.config={preset}",
                      "data.batch_size=8", "lora.rank=2",
                      "lora.modules=all", "lora.targets=[q_proj,v_proj,down_proj]", "lora.dropout=0.2",
                      "lora.lr=0.02", "checkpoint.async_save=false")
    trainer = Trainer(cfg)
    before = _params(trainer)
    trainer.run()
    after = _params(trainer)
    vision = [k for k in before if k.startswith("visual/blocks/") and "/lora/" in k]
    assert len(vision) == 4 if preset == "qwen3vl_tiny" else len(vision) == 6
    for k in before:
        same = np.array_equal(before[k], after[k])
        assert same != ("/lora/" in k), k
