"""LoRA checkpoints on export: the merged export loads in transformers with the JAX LoRA model's logits, the
PEFT adapter directory loads with `peft` onto the exported base with the same logits, and bad requests are one
line. The LoRA checkpoints are written as training writes them (params with `.../lora/a|b` + a "lora" section);
one test trains the adapters with `stvl train`'s Trainer and exports its checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_convert_roundtrip import ROWS, from_pretrained, read_hf

pytestmark = pytest.mark.torch

ALL_LLM = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_checkpoint(base_ckpt, out, spec, seed=0, std=0.05):
    """A copy of stvl checkpoint `base_ckpt` with random (non-zero A and B) adapters for `spec`."""
    from stvl_jax import checkpoint_io
    from stvl_jax.models.qwen_vl.loading import abstract_model, read_config
    from stvl_jax.nn.params import flat_params

    config, info = read_config(base_ckpt)
    stored = checkpoint_io.param_metadata(base_ckpt)
    flat = checkpoint_io.restore_params(base_ckpt, {k: None for k in stored})
    rng = np.random.default_rng(seed)
    for k, v in flat_params(abstract_model(config, lora=spec)).items():
        if "/lora/" in k:
            flat[k] = (rng.normal(size=v.get_value().shape) * std).astype(np.float32)
    return checkpoint_io.write_checkpoint(out, config.to_dict(), flat, source=info["source"],
                                          preprocessing=info["preprocessing"], sections={"lora": spec.to_dict()})


def jax_logits(ckpt, batch):
    from stvl_jax.models.qwen_vl.loading import load_model

    return np.asarray(load_model(ckpt)(**batch).logits)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_merged_export_matches_the_jax_lora_model_in_transformers(family, hf_checkpoint, stvl, tmp_path):
    """Adapters on the LLM projections and the ViT blocks (the vision q/k/v merge into transformers' fused
    qkv): transformers' logits of the merged export == our LoRA model's (unmerged) logits, fp32, 1e-4."""
    from qwen_vl_helpers import build_batch, torch_logits

    from stvl_jax.nn.lora import LoRASpec

    src, hf_model = hf_checkpoint(family)
    assert stvl("import", "--hf", src, "--out", tmp_path / "base", "--quiet")[0] == 0
    vision = ("fc1",) if family == "qwen3_vl" else ()  # Qwen2.5-VL's ViT MLP is gate/up/down_proj
    spec = LoRASpec(rank=4, alpha=8.0, dropout=0.1, targets=ALL_LLM + vision, modules="all")
    lora_checkpoint(tmp_path / "base", tmp_path / "lora", spec)
    batch = build_batch(hf_model.config, ROWS)
    ours = jax_logits(tmp_path / "lora", batch)
    rc, out, err = stvl("export", "--ckpt", tmp_path / "lora", "--out", tmp_path / "merged", "--quiet")
    assert rc == 0, err
    exported = read_hf(tmp_path / "merged")
    assert not any("lora" in k for k in exported) and sorted(exported) == sorted(read_hf(src))
    theirs = torch_logits(from_pretrained(tmp_path / "merged"), batch)
    assert np.abs(ours - torch_logits(hf_model, batch)).max() > 1e-2  # control: the adapters matter
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_peft_adapter_dir_loads_with_peft(family, hf_checkpoint, stvl, tmp_path):
    """--lora-adapter-dir: the base goes out unmerged (bit-exact to the original), the adapters in PEFT's format;
    PeftModel.from_pretrained(base, dir) gives our LoRA model's logits."""
    pytest.importorskip("peft")
    from peft import PeftModel
    from qwen_vl_helpers import build_batch, torch_logits

    from stvl_jax.nn.lora import LoRASpec

    src, hf_model = hf_checkpoint(family)
    assert stvl("import", "--hf", src, "--out", tmp_path / "base", "--quiet")[0] == 0
    spec = LoRASpec(rank=4, alpha=8.0, dropout=0.05, targets=ALL_LLM, modules="llm")
    lora_checkpoint(tmp_path / "base", tmp_path / "lora", spec, seed=1)
    rc, out, err = stvl("export", "--ckpt", tmp_path / "lora", "--out", tmp_path / "hf", "--lora-adapter-dir",
                        tmp_path / "adapter", "--quiet")
    assert rc == 0, err
    import torch

    base_tensors, original = read_hf(tmp_path / "hf"), read_hf(src)
    assert sorted(base_tensors) == sorted(original)
    assert all(torch.equal(base_tensors[k], original[k]) for k in original)
    cfg = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8.0 and cfg["peft_type"] == "LORA"
    from safetensors import safe_open

    with safe_open(tmp_path / "adapter/adapter_model.safetensors", framework="np") as f:
        keys = set(f.keys())
        a = f.get_tensor("base_model.model.model.language_model.layers.1.self_attn.o_proj.lora_A.weight")
        b = f.get_tensor("base_model.model.model.language_model.layers.1.self_attn.o_proj.lora_B.weight")
    n_layers = hf_model.config.text_config.num_hidden_layers
    assert len(keys) == 2 * len(ALL_LLM) * n_layers
    h, hd = hf_model.config.text_config.num_attention_heads, hf_model.config.text_config.hidden_size
    assert a.shape == (4, h * (hf_model.config.text_config.head_dim if family == "qwen3_vl" else hd // h))
    assert b.shape == (hd, 4)

    batch = build_batch(hf_model.config, ROWS)
    ours = jax_logits(tmp_path / "lora", batch)
    peft_model = PeftModel.from_pretrained(from_pretrained(tmp_path / "hf"), tmp_path / "adapter").eval()
    n_lora = sum(1 for name, _ in peft_model.named_modules() if name.endswith("lora_A.default"))
    assert n_lora == len(ALL_LLM) * n_layers  # every adapter found its module, and no vision layer took one
    theirs = torch_logits(peft_model, batch)
    assert np.abs(ours - torch_logits(hf_model, batch)).max() > 1e-2  # control
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_adapter_dir_requests_that_cannot_work_are_one_line(hf_checkpoint, stvl, tmp_path):
    from stvl_jax.nn.lora import LoRASpec

    src, _ = hf_checkpoint("qwen3_vl")
    assert stvl("import", "--hf", src, "--out", tmp_path / "base", "--quiet")[0] == 0
    rc, out, err = stvl("export", "--ckpt", tmp_path / "base", "--out", tmp_path / "o1", "--lora-adapter-dir",
                        tmp_path / "a1", "--quiet")
    assert rc == 2 and "has no LoRA adapters" in err and len(err.strip().splitlines()) == 1
    lora_checkpoint(tmp_path / "base", tmp_path / "vis", LoRASpec(rank=2, alpha=2.0, targets=("q_proj",),
                                                                   modules="vision"))
    rc, out, err = stvl("export", "--ckpt", tmp_path / "vis", "--out", tmp_path / "o2", "--lora-adapter-dir",
                        tmp_path / "a2", "--quiet")
    assert rc == 2 and "fused" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()  # a failed export leaves nothing behind

    # a LoRA checkpoint as a run's initial weights: one line (merge it first, or resume its run)
    from stvl_jax.errors import CheckpointError
    from stvl_jax.train.lora_train import refuse_adapter_checkpoint

    refuse_adapter_checkpoint(tmp_path / "base")
    with pytest.raises(CheckpointError, match="holds LoRA adapters") as e:
        refuse_adapter_checkpoint(tmp_path / "vis")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_trained_adapters_export_merged(hf_checkpoint, stvl, tmp_path):
    """`stvl train` with `lora:` from an imported checkpoint, then export of its step checkpoint: transformers'
    logits == the trainer's model's logits."""
    from qwen_vl_helpers import build_batch, torch_logits

    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer

    src, hf_model = hf_checkpoint("qwen3_vl", tie=False)
    assert stvl("import", "--hf", src, "--out", tmp_path / "base", "--quiet")[0] == 0
    cfg = load_train_config("qwen3vl_tiny_synthetic", [
        f"out_dir={tmp_path / 'run'}", "steps=3", "model.config=null", f"model.checkpoint={tmp_path / 'base'}",
        "data.batch_size=8", "data.synthetic.image_grid=null", "lora.rank=4", "lora.lr=0.05",
        "logging.progress=false", "logging.tensorboard=false", "logging.plot=false", "checkpoint.async_save=false"])
    trainer = Trainer(cfg)
    trainer.run()
    batch = build_batch(hf_model.config, ROWS)
    ours = np.asarray(trainer.model()(**batch).logits)
    rc, out, err = stvl("export", "--ckpt", tmp_path / "run/checkpoints/3", "--out", tmp_path / "hf", "--quiet")
    assert rc == 0, err
    theirs = torch_logits(from_pretrained(tmp_path / "hf"), batch)
    assert np.abs(ours - torch_logits(hf_model, batch)).max() > 1e-3  # control: training moved the adapters
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
