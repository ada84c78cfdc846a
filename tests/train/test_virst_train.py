"""VIRST training (`stvl train virst_tiny`): config and data errors, parameter groups, the teacher-forced prompt
(fast); loss decrease, exact resume, frozen groups, the saved model loading as a VirstModel (slow: each compiles
VIRST's training step — the LLM, the SegPrompter and SAM2 tracking — minutes on CPU)."""

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
    assert set(groups.values()) == {"llm", "image_encoder", "decoder", "prompter"}
    assert groups["llm/language_model/embed_tokens/embedding"] == "llm"
    assert all(g == "image_encoder" for p, g in groups.items() if p.startswith("sam2/image/vision_encoder/"))
    assert all(g == "decoder" for p, g in groups.items() if p.startswith(("sam2/memory_", "sam2/image/mask_dec")))
    assert all(g == "prompter" for p, g in groups.items() if p.startswith(("seg_prompter/", "initial_fusion/")))


def test_the_training_anchor_rule_reaches_the_forward():
    """`data.seg_anchors`: "eval" (default) asks the forward for the evaluation's anchors (None), "all" for every
    SAM2 frame, as VIRST's default training (`use_cond_frames` False: `cond_frames = arange(T)` over its
    keyframes) decodes each from its own [SEG] prompts."""
    import dataclasses
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp

    from stvl_jax.train.virst_config import load_virst_train_config
    from stvl_jax.train.virst_loss import VirstLossConfig
    from stvl_jax.train.virst_step import batch_loss, train_anchor_frames

    cfg = load_virst_train_config("configs/train/virst_tiny.yaml", ["data.dir=unused"])
    assert cfg.data.seg_anchors == "eval"
    assert train_anchor_frames(4, "all") == (0, 1, 2, 3) and train_anchor_frames(8, "eval") is None

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Vision:  # stands in for the packed VisionInputs template (only its pixel rows are replaced)
        pixel_values: jnp.ndarray

    asked = []

    class Model:  # TEST DOUBLE of VirstModel.forward: records the anchors the loss asks for
        def forward(self, inputs, pixels, *, track, multimask, dropout_rng, anchors=None):
            asked.append(anchors)
            t = pixels.shape[0]
            zeros = jnp.zeros((1, t))
            return SimpleNamespace(logits=jnp.zeros((1, 6, 7)), tracking=SimpleNamespace(
                low_res_logits=jnp.zeros((1, t, 2, 2)), iou=zeros, object_score_logits=zeros))

    b, t, length = 2, 3, 6
    batch = {"pixel_values_videos": jnp.zeros((b, 4, 5)), "input_ids": jnp.zeros((b, length), jnp.int32),
             "attention_mask": jnp.ones((b, length), jnp.int32), "position_ids": jnp.zeros((b, 3, length), jnp.int32),
             "labels": jnp.full((b, length), -100, jnp.int32), "sam2_pixel_values": jnp.zeros((b, t, 3, 8, 8)),
             "masks": jnp.zeros((b, t, 8, 8), bool), "dropout_key": jnp.zeros((b, 2), jnp.uint32)}
    for rule, want in (("all", (0, 1, 2)), ("eval", None)):
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


# ------------------------------------------------------------------------------------------ slow
def _cfg(rvos_set, out, *overrides):
    from stvl_jax.train.virst_config import load_virst_train_config

    # batch 1, 4 VLM frames, 2 SAM2 frames (anchor 0 + one tracked frame): the full step, cheaper to compile
    return load_virst_train_config("configs/train/virst_tiny.yaml", [
        f"data.dir={rvos_set}", f"out_dir={out}", "data.batch_size=1", "data.seg_frames=2", "mesh.data=1",
        "checkpoint.every=100", "optim.warmup_steps=0", *overrides])


def _mesh():
    import jax

    from stvl_jax.sharding import make_mesh

    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


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

    loaded = {k: np.asarray(v.get_value()) for k, v in flat_params(model).items()}
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
    assert {group_of(k) for k in before} == {"llm", "image_encoder", "decoder"}
    assert {group_of(k) for k in start} == {"prompter"}
    tr.run()
    tr.close()
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(tr.frozen[k]), v, err_msg=k)
    assert any(not np.array_equal(np.asarray(tr.params[k]), v) for k, v in start.items())
