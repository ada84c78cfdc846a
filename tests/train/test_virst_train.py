"""VIRST training (`stvl train virst_tiny`): config and data errors, parameter groups, the teacher-forced prompt,
LoRA's groups and its merged / PEFT export (fast); loss decrease, exact resume, frozen groups, the saved model
loading as a VirstModel, LoRA steps (base LLM bit-identical, adapters trained, exact resume), a 2x2x2 mesh step ==
one device (slow: each compiles VIRST's training step — the LLM, the SegPrompter and SAM2 tracking — minutes on
CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from stvl_jax.cli import main

SEG_ID = 512  # configs/models/virst_tiny.yaml


def test_a_missing_data_set_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["train", "virst_tiny", f"data.dir={missing}", f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "--export rvos" in err[0]


def test_an_unknown_key_is_refused(tmp_path, capsys):
    assert main(["train", "virst_tiny", "optim.groups.nope.train=false", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_every_virst_parameter_has_a_group():
    from stvl_jax.models.virst.config import load_virst_config
    from stvl_jax.models.virst.model import abstract_virst_model
    from stvl_jax.nn.params import flat_params
    from stvl_jax.train.virst_trainer import group_of

    cfg = load_virst_config("virst_tiny").replace(initial_fusion={"enabled": True, "num_heads": 4})
    groups = {p: group_of(p) for p in flat_params(abstract_virst_model(cfg))}
    assert set(groups.values()) == {"llm", "image_encoder", "decoder", "prompter", "fixed"}
    assert sorted(p for p, g in groups.items() if g == "fixed") == [
        "sam2/image/prompt_encoder/shared_embedding/positional_embedding",
        "sam2/image/shared_image_embedding/positional_embedding"]
    assert groups["llm/language_model/embed_tokens/embedding"] == "llm"
    assert all(g == "image_encoder" for p, g in groups.items() if p.startswith("sam2/image/vision_encoder/"))
    assert all(g == "decoder" for p, g in groups.items() if p.startswith(("sam2/memory_", "sam2/image/mask_dec")))
    assert all(g == "prompter" for p, g in groups.items() if p.startswith(("seg_prompter/", "initial_fusion/")))


def test_the_training_anchor_rule_reaches_the_forward():
    """`data.anchors`: "uniform" asks the forward for the evaluation's anchors (None), "all" for every
    SAM2 frame, as VIRST's default training (`use_cond_frames` False: `cond_frames = arange(T)` over its
    keyframes) decodes each from its own [SEG] prompts."""
    import dataclasses
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp

    from stvl_jax.train.virst_config import load_virst_train_config
    from stvl_jax.train.virst_loss import VirstLossConfig
    from stvl_jax.train.virst_step import batch_loss, forward_anchors

    cfg = load_virst_train_config("configs/train/virst_tiny.yaml", ["data.dir=unused"])
    assert cfg.data.anchors == "random"
    assert forward_anchors(4, "all") == (0, 1, 2, 3) and forward_anchors(8, "uniform") is None

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Vision:  # stands in for the packed VisionInputs template (only its pixel rows are replaced)
        pixel_values: jnp.ndarray

    asked = []

    class Model:  # TEST DOUBLE of VirstModel.forward: records the anchors the loss asks for
        def forward(self, inputs, pixels, *, track, multimask, dropout_rng, anchor_frames=None):
            asked.append(anchor_frames)
            t = pixels.shape[0]
            zeros = jnp.zeros((1, t))
            return SimpleNamespace(logits=jnp.zeros((1, 6, 7)), tracking=SimpleNamespace(
                low_res_logits=jnp.zeros((1, t, 2, 2)), iou=zeros, object_score_logits=zeros))

    b, t, length = 2, 3, 6
    batch = {"pixel_values_videos": jnp.zeros((b, 4, 5)), "input_ids": jnp.zeros((b, length), jnp.int32),
             "attention_mask": jnp.ones((b, length), jnp.int32), "position_ids": jnp.zeros((b, 3, length), jnp.int32),
             "labels": jnp.full((b, length), -100, jnp.int32), "sam2_pixel_values": jnp.zeros((b, t, 3, 8, 8)),
             "masks": jnp.zeros((b, t, 8, 8), bool), "dropout_key": jnp.zeros((b, 2), jnp.uint32)}
    for rule, want in (("all", (0, 1, 2)), ("uniform", None)):
        asked.clear()
        _, metrics = batch_loss(Model(), batch, Vision(jnp.zeros((4, 5))), VirstLossConfig(), rule)
        assert asked == [want] and float(metrics["frames"]) == b * t


@pytest.fixture(scope="module")
def rvos_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("virst_rvos"))
    assert main(["data", "synth", "--out", out, "--videos", "6", "--seed", "2", "--workers", "1", "--export",
                 "rvos"]) == 0
    return out


def test_the_prompt_is_virst_teacher_forced_text(rvos_set, tmp_path):
    """The sample_fn's row: 10 [SEG] tokens in the answer, labels on the assistant turn only and never on [SEG],
    the video's placeholder count = its grid's merged tokens, right padding."""
    from transformers import AutoTokenizer

    from data_pipelines.grain.rvos import RvosPipelineConfig, make_rvos_pipeline
    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
    from stvl_jax.train.virst_data import VirstPrompt

    tok_dir = build_tiny_tokenizer(str(tmp_path / "tok"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.add_tokens(["[SEG]"])
    tok.save_pretrained(tok_dir)
    pre = PreprocessConfig.qwen3_vl()
    prompt = VirstPrompt(tok_dir, SEG_ID, 10, 200, "qwen3_vl", 2, 2)
    it = make_rvos_pipeline(RvosPipelineConfig(root=rvos_set, split="train", vlm_frames=4, seg_frames=2,
                                               vlm_size=(64, 64), preprocess=pre,
                                               sam2=Sam2PreprocessConfig(image_size=32), batch_size=1,
                                               sample_fn=prompt))
    b = next(it)
    ids, labels, mask = b["input_ids"][0], b["labels"][0], b["attention_mask"][0]
    n = int(mask.sum())
    assert ids.shape == (200,) and mask[:n].all() and not mask[n:].any() and (labels[n:] == -100).all()
    assert (ids == SEG_ID).sum() == 10 and (labels[ids == SEG_ID] == -100).all()
    # 4 frames of 64x64, patch 16, temporal 2, merge 2: 2 groups x (4x4 / 4) = 8 video tokens
    assert (ids == tok.convert_tokens_to_ids("<|video_pad|>")).sum() == 8
    text = tok.decode(ids[:n])
    assistant = text.index("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")
    labelled = tok.decode(ids[labels != -100])
    assert labelled.replace(" ", "") in text[assistant:].replace("[SEG]", "").replace(" ", "")
    assert "(0)" in labelled and "<|im_end|>" in labelled and b["expression"][0] in text[:assistant]
    assert b["position_ids"].shape == (1, 3, 200)


def test_lora_and_anchor_keys_are_typed():
    from stvl_jax.errors import ConfigError
    from stvl_jax.train.virst_config import load_virst_train_config

    path = "configs/train/virst_tiny.yaml"
    cfg = load_virst_train_config(path, ["data.dir=x", "lora.rank=4", "lora.train_groups=[embed]"])
    assert cfg.lora.rank == 4 and cfg.lora.alpha == 16 and cfg.lora.train_groups == ("embed",)
    assert load_virst_train_config(path, ["data.dir=x"]).lora is None
    assert (cfg.data.anchors, cfg.data.num_anchors) == ("random", 3)  # upstream: keyframe_scheme random, 3
    for bad, word in (("data.anchors=linspace", "anchors"), ("data.num_anchors=0", "num_anchors"),
                      ("lora.train_groups=[prompter]", "train_groups"), ("lora.ranks=4", "ranks")):
        with pytest.raises(ConfigError, match=word) as e:
            load_virst_train_config(path, ["data.dir=x", bad])
        assert "\n" not in str(e.value)


def test_lora_groups_of_virst_parameters():
    """With lora (train_groups [embed]): adapters -> lora, the [SEG]-holding embedding -> llm (trained), every other
    LLM base weight -> llm_base (frozen); SAM2 and the SegPrompter keep their groups."""
    from flax import nnx

    from stvl_jax.models.virst.config import load_virst_config
    from stvl_jax.models.virst.model import VirstModel
    from stvl_jax.nn.lora import add_lora
    from stvl_jax.nn.params import flat_params
    from stvl_jax.train.lora_config import LoRAConfig
    from stvl_jax.train.virst_trainer import group_of

    lora = LoRAConfig(rank=2, targets=("q_proj", "down_proj"), train_groups=("embed",))

    def build():
        model = VirstModel(load_virst_config("virst_tiny"), rngs=nnx.Rngs(0))
        add_lora(model.llm, lora.spec(), nnx.Rngs(1))
        return model

    groups = {p: group_of(p, lora) for p in flat_params(nnx.eval_shape(build))}
    assert sorted(p for p, g in groups.items() if g == "lora") == [
        f"llm/language_model/layers/{m}/lora/{x}" for m in ("mlp/down_proj", "self_attn/q_proj") for x in "ab"]
    assert [p for p, g in groups.items() if g == "llm"] == ["llm/language_model/embed_tokens/embedding"]
    assert all(g == "llm_base" for p, g in groups.items() if p.startswith("llm/") and "/lora/" not in p
               and "embed_tokens" not in p)
    others = {g for p, g in groups.items() if not p.startswith("llm/")}
    assert others == {"image_encoder", "decoder", "prompter", "fixed"}
    assert {g for p, g in groups.items() if p.startswith("llm/")} == {"lora", "llm", "llm_base"}


# ------------------------------------------------------------------------------ trainers (the slow ones run steps)
def _cfg(rvos_set, out, *overrides):
    from stvl_jax.train.virst_config import load_virst_train_config

    # batch 1, 4 VLM frames, 2 SAM2 frames (one random anchor + one tracked frame): the full step, cheaper to compile
    return load_virst_train_config("configs/train/virst_tiny.yaml", [
        f"data.dir={rvos_set}", f"out_dir={out}", "data.batch_size=1", "data.seg_frames=2", "data.num_anchors=1",
        "mesh.data=1", "checkpoint.every=100", "optim.warmup_steps=0", *overrides])


def _mesh():
    import jax

    from stvl_jax.sharding import make_mesh

    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


@pytest.mark.slow  # builds a VirstTrainer: the eager init compiles ~400 initialisers, ~4 min on a loaded 2-core host
def test_lora_groups_and_the_merged_and_peft_export(rvos_set, tmp_path):
    """With lora: the adapters (+ the VIRST groups optim trains) are trainable, every LLM base weight frozen; the
    saved model is the plain VIRST architecture with W + (alpha / r) A B folded in (by hand here), and
    `{out_dir}/lora_adapter` holds PEFT's A^T / B^T per layer."""
    import json

    from safetensors.numpy import load_file

    from stvl_jax import load_model
    from stvl_jax.nn.params import flat_params
    from stvl_jax.train.virst_trainer import VirstTrainer

    tr = VirstTrainer(_cfg(rvos_set, tmp_path, "lora.rank=4", "lora.alpha=8", "lora.targets=[q_proj,v_proj]",
                           "optim.groups.image_encoder.train=false"), mesh=_mesh())
    adapters = sorted(k for k in tr.params if k.endswith(("/lora/a", "/lora/b")))
    assert len(adapters) == 4 and all(k.startswith("llm/language_model/layers/self_attn/") for k in adapters)
    assert {k.split("/")[0] for k in tr.params if k not in adapters} == {"sam2", "seg_prompter"}
    assert not any(k.startswith("sam2/image/vision_encoder/") for k in tr.params)  # frozen by optim.groups
    assert any(k.startswith("llm/") for k in tr.frozen) and not any("/lora/" in k for k in tr.frozen)
    assert not any(k.startswith("llm/") for k in tr.params if k not in adapters)
    # trained-looking adapters (B is zero at the start), then the export
    rng = np.random.default_rng(0)
    for k in adapters:
        tr.params[k] = np.asarray(rng.normal(0, 0.1, np.shape(tr.params[k])), np.float32)
    flat = tr.flat_params()
    model_dir = tr.save_model(tmp_path / "model")
    tr.close()
    loaded = {k: np.asarray(v.get_value()) for k, v in flat_params(load_model(model_dir)).items()}
    assert set(loaded) == {k for k in flat if "/lora/" not in k}
    for k, v in loaded.items():
        if k.endswith(("q_proj/kernel", "v_proj/kernel")) and k.startswith("llm/language_model/"):
            base = k[: -len("kernel")]
            a, b = flat[base + "lora/a"], flat[base + "lora/b"]  # (L, D, r), (L, r, H, hd)
            np.testing.assert_allclose(v, flat[k] + 2.0 * np.einsum("ldr,lr...->ld...", a, b), rtol=1e-6,
                                       atol=1e-6, err_msg=k)
            assert not np.array_equal(v, flat[k])
        else:
            np.testing.assert_array_equal(v, flat[k], err_msg=k)
    peft = tmp_path / "lora_adapter"
    conf = json.loads((peft / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == 4 and conf["lora_alpha"] == 8
    tensors = load_file(str(peft / "adapter_model.safetensors"))
    layers = flat["llm/language_model/layers/self_attn/q_proj/lora/a"].shape[0]
    assert len(tensors) == layers * 2 * 2
    prefix = "base_model.model.model.language_model.layers.1.self_attn."
    q_a, q_b = flat["llm/language_model/layers/self_attn/q_proj/lora/a"][1], \
        flat["llm/language_model/layers/self_attn/q_proj/lora/b"][1]
    np.testing.assert_array_equal(tensors[prefix + "q_proj.lora_A.weight"], q_a.T)  # (r, in)
    np.testing.assert_array_equal(tensors[prefix + "q_proj.lora_B.weight"], q_b.reshape(4, -1).T)  # (out, r)


@pytest.mark.slow
def test_loss_decreases_resume_is_exact_and_the_model_loads(rvos_set, tmp_path):
    from stvl_jax import load_model
    from stvl_jax.models.virst.model import VirstModel
    from stvl_jax.train.virst_trainer import VirstTrainer

    same = ("steps=12", "optim.lr=3e-3")  # one lr schedule: one compiled step for every trainer here
    full = VirstTrainer(_cfg(rvos_set, tmp_path / "full", *same), mesh=_mesh())
    summary = full.run()
    full.close()
    losses = [r["loss"] for r in summary["history"]]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert summary["history"][-1]["data/skipped"] == 0

    # interrupted after step 2 (checkpoint + pipeline state), resumed to 4 == 4 uninterrupted steps
    cut = VirstTrainer(_cfg(rvos_set, tmp_path / "cut", *same), mesh=_mesh())
    cut.run(until=2)
    cut.close()
    resumed = VirstTrainer(_cfg(rvos_set, tmp_path / "cut", *same, "checkpoint.resume=required"), mesh=_mesh())
    assert resumed.resumed_from == 2
    resumed.run(until=4)
    resumed.close()
    got = [r["loss"] for r in summary["history"][:4]]
    from stvl_jax.train.metrics import read_metrics

    after = [r["loss"] for r in read_metrics(tmp_path / "cut") if r.get("step") in (3, 4)]
    assert after == got[2:4]  # bit-exact: same batches, same dropout keys, same state
    ref = VirstTrainer(_cfg(rvos_set, tmp_path / "ref", *same), mesh=_mesh())
    ref.run(until=4)
    ref.close()
    for k in ref.params:
        np.testing.assert_array_equal(np.asarray(ref.params[k]), np.asarray(resumed.params[k]), err_msg=k)

    model = load_model(summary["model_dir"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(f"{summary['model_dir']}/tokenizer")  # travels with the checkpoint
    assert tok.convert_tokens_to_ids("[SEG]") == SEG_ID
    assert isinstance(model, VirstModel)
    flat = full.flat_params()
    from stvl_jax.nn.params import flat_params

    # the final model, and the last checkpoint step's own model/ (what `stvl eval rvos` loads from a step)
    for m in (model, load_model(str(tmp_path / "full" / "checkpoints" / "12" / "model"))):
        loaded = {k: np.asarray(v.get_value()) for k, v in flat_params(m).items()}
        assert set(loaded) == set(flat)
        for k, v in flat.items():
            np.testing.assert_array_equal(loaded[k], v, err_msg=k)


@pytest.mark.slow
def test_frozen_groups_stay_bit_identical(rvos_set, tmp_path):
    from stvl_jax.train.virst_trainer import VirstTrainer, group_of

    tr = VirstTrainer(_cfg(rvos_set, tmp_path, "steps=2", "optim.groups.llm.train=false",
                           "optim.groups.image_encoder.train=false", "optim.groups.decoder.train=false"), mesh=_mesh())
    before = {k: np.asarray(v).copy() for k, v in tr.frozen.items()}
    start = {k: np.asarray(v).copy() for k, v in tr.params.items()}
    assert {group_of(k) for k in before} == {"llm", "image_encoder", "decoder", "fixed"}
    assert {group_of(k) for k in start} == {"prompter"}
    tr.run()
    tr.close()
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(tr.frozen[k]), v, err_msg=k)
    assert any(not np.array_equal(np.asarray(tr.params[k]), v) for k, v in start.items())


@pytest.mark.slow
def test_lora_steps_keep_the_base_llm_and_resume_exactly(rvos_set, tmp_path):
    from stvl_jax.train.metrics import read_metrics
    from stvl_jax.train.virst_trainer import VirstTrainer

    lora = ("steps=3", "optim.lr=3e-3", "lora.rank=4", "lora.alpha=8", "lora.dropout=0.1", "lora.lr=1e-2",
            "lora.targets=[q_proj,v_proj]")
    full = VirstTrainer(_cfg(rvos_set, tmp_path / "full", *lora), mesh=_mesh())
    base = {k: np.asarray(v).copy() for k, v in full.frozen.items() if k.startswith("llm/")}
    start = {k: np.asarray(v).copy() for k, v in full.params.items()}
    adapters = [k for k in start if "/lora/" in k]
    assert base and adapters and not any(k.startswith("llm/") and k not in adapters for k in start)
    summary = full.run()
    full.close()
    losses = [r["loss"] for r in summary["history"]]
    assert len(losses) == 3 and np.isfinite(losses).all(), losses
    for k, v in base.items():  # every base LLM weight bit-identical
        np.testing.assert_array_equal(np.asarray(full.frozen[k]), v, err_msg=k)
    for k in adapters:  # B leaves zero at step 1, A moves from step 2 on (its gradient is 0 while B = 0)
        assert not np.array_equal(np.asarray(full.params[k]), start[k]), k
    assert any(not np.array_equal(np.asarray(full.params[k]), start[k]) for k in start if k.startswith("seg_"))

    # interrupted after step 2, resumed to 3 == 3 uninterrupted steps (adapters, optimizer, dropout masks)
    cut = VirstTrainer(_cfg(rvos_set, tmp_path / "cut", *lora), mesh=_mesh())
    cut.run(until=2)
    cut.close()
    resumed = VirstTrainer(_cfg(rvos_set, tmp_path / "cut", *lora, "checkpoint.resume=required"), mesh=_mesh())
    assert resumed.resumed_from == 2
    resumed.run()
    resumed.close()
    assert [r["loss"] for r in read_metrics(tmp_path / "cut") if r.get("step") == 3] == losses[2:]
    for k in full.params:
        np.testing.assert_array_equal(np.asarray(resumed.params[k]), np.asarray(full.params[k]), err_msg=k)


@pytest.mark.slow
def test_a_2x2x2_mesh_step_equals_one_device(rvos_set, tmp_path):
    """8 expressions, one per device of a (data 2, fsdp 2, tensor 2) mesh, against all 8 vmapped on one device:
    the same loss and metrics, gradients (Adam's first moment) and updated parameters (fp32)."""
    import jax

    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.virst_trainer import VirstTrainer

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (host) devices")
    over = ("steps=1", "data.batch_size=8")
    one = VirstTrainer(_cfg(rvos_set, tmp_path / "one", *over), mesh=_mesh())
    h1 = one.run()["history"][-1]
    one.close()
    eight = VirstTrainer(_cfg(rvos_set, tmp_path / "eight", *over), mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    h8 = eight.run()["history"][-1]
    eight.close()
    for k in ("loss", "ce", "bce", "dice", "iou", "occ", "grad_norm"):
        np.testing.assert_allclose(h8[k], h1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    mu1, mu8 = _first_moments(one.opt_state), _first_moments(eight.opt_state)
    assert set(mu1) == set(one.params) == set(mu8)
    # Adam's first moment after one step: 0.1 x the gradient; atol 1e-5 of the largest (a key bias's gradient is 0
    # up to 1e-16 noise)
    scale = max(float(np.abs(g).max()) for g in mu1.values())
    for k, g1 in mu1.items():
        np.testing.assert_allclose(mu8[k], g1, rtol=1e-5, atol=1e-5 * scale, err_msg=k)
        # Adam's first update lr g / (|g| + 1e-8) turns fp32 reduction-order noise of gradients near eps into O(lr)
        # differences (seen: 7 of 131072 elements of one kernel, |g| ~ 1e-7); compare where |g| > 1e-6
        ok = np.abs(g1) > 1e-7
        np.testing.assert_allclose(np.asarray(eight.params[k])[ok], np.asarray(one.params[k])[ok], rtol=1e-5,
                                   atol=1e-6, err_msg=k)


def _first_moments(opt_state) -> dict:
    """{parameter path: Adam's mu} of a FlatTrainer optimizer state."""
    import jax

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        if any(getattr(p, "name", None) == "mu" for p in path) and keys:
            out[keys[-1]] = np.asarray(leaf)
    return out
