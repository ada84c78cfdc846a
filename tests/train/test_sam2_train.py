"""SAM2 training (`stvl train sam2_tiny_synthetic`): processing order, groups, config and data errors (fast);
the clip loss's gradient reaching the memory attention, loss decrease, resume, frozen groups, mesh == one
device, and the trained model loading in `stvl eval vos` (slow: each compiles the clip step, minutes on CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stvl_jax.cli import main
from stvl_jax.train.sam2_step import processing_order


def test_processing_order_puts_prompts_first_and_skips_frames_before_the_first_prompt():
    cond = np.zeros((3, 6), bool)
    cond[0, [2, 4]] = True  # prompts on frames 2 and 4
    cond[1, 0] = True
    order, active = processing_order(cond)  # object 2: no prompt (a padding slot)
    assert order[0].tolist() == [2, 4, 3, 5, 0, 1] and active[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert order[1].tolist() == [0, 1, 2, 3, 4, 5] and active[1].all()
    assert not active[2].any()


def test_every_sam2_parameter_has_a_group():
    from stvl_jax.models.sam2.video_model import abstract_video_model
    from stvl_jax.nn.params import flat_params
    from stvl_jax.train.sam2_config import resolve_model_config, Sam2ModelSection
    from stvl_jax.train.sam2_trainer import group_of

    paths = list(flat_params(abstract_video_model(resolve_model_config(Sam2ModelSection(config="sam2_tiny")))))
    groups = {p: group_of(p) for p in paths}
    assert set(groups.values()) == {"image_encoder", "decoder", "memory", "fixed"}
    # Meta's and transformers' SAM2 hold the Fourier matrices as buffers
    assert sorted(p for p, g in groups.items() if g == "fixed") == [
        "image/prompt_encoder/shared_embedding/positional_embedding",
        "image/shared_image_embedding/positional_embedding"]
    assert all(g == "memory" for p, g in groups.items() if p.startswith(("memory_attention/", "memory_encoder/")))
    assert all(g == "image_encoder" for p, g in groups.items() if p.startswith("image/vision_encoder/"))
    assert all(g == "decoder" for p, g in groups.items() if p.startswith("image/mask_decoder/"))


def test_a_missing_data_set_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["train", "sam2_tiny_synthetic", f"data.dir={missing}", f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "stvl data synth --preset vos" in err[0]


def test_an_unknown_key_is_refused(tmp_path, capsys):
    assert main(["train", "sam2_tiny_synthetic", "optim.nope=1", f"out_dir={tmp_path}"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_config_without_a_loss_is_refused(tmp_path, capsys):
    assert main(["train", "sam2_tiny_synthetic", "data.video_frames=false", f"out_dir={tmp_path}"]) == 2
    assert "data.image_frames and data.video_frames are both false" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ slow
def _cfg(vos_set, out, *overrides):
    from stvl_jax import packaged
    from stvl_jax.train.sam2_config import load_sam2_train_config

    # 3-frame clips, 2 object slots: the same step as 8 frames, cheaper to run
    return load_sam2_train_config(packaged.resolve_config("sam2_tiny_synthetic", "train"), [
        f"data.dir={vos_set}", f"out_dir={out}", "data.frames=3", "data.max_objects=2", "data.batch_size=1",
        "mesh.data=1", "steps=3", "checkpoint.every=100", *overrides])


def _one_device_mesh():
    import jax

    from stvl_jax.sharding import make_mesh

    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


@pytest.mark.slow
def test_the_clip_loss_trains_the_memory_attention(vos_set, tmp_path):
    """Tracking is trained: the loss of tracked frames reaches the memory attention and the memory encoder."""
    import jax
    from flax import nnx

    from stvl_jax.train.sam2_step import clip_loss
    from stvl_jax.train.sam2_trainer import Sam2Trainer

    tr = Sam2Trainer(_cfg(vos_set, tmp_path), mesh=_one_device_mesh())
    batch = tr.batch(0)
    assert batch["cond"].sum() >= 1 and (batch["active"] & ~batch["cond"]).any()  # tracked frames exist
    graphdef, params = nnx.split(tr.model(), nnx.Param)

    def loss(ps):
        return clip_loss(nnx.merge(graphdef, ps), batch, tr.cfg.loss, cond_capacity=2, clicks=False,
                         mask_prompts=False)[0]

    grads = {"/".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(jax.grad(loss)(params))}
    for prefix in ("memory_attention/", "memory_encoder/", "memory_embeddings/memory_temporal"):
        norm = sum(float(np.abs(g).sum()) for k, g in grads.items() if k.startswith(prefix))
        assert norm > 0, prefix
    tr.close()


@pytest.mark.slow
def test_loss_decreases_resume_is_exact_and_the_model_loads_in_eval_vos(vos_set, tmp_path):
    import jax

    from stvl_jax.models.sam2.loading import load_model
    from stvl_jax.train.sam2_trainer import Sam2Trainer

    mesh = _one_device_mesh()
    full = Sam2Trainer(_cfg(vos_set, tmp_path / "full", "steps=30", "optim.warmup_steps=0"), mesh=mesh)
    summary = full.run()
    full.close()
    losses = [r["loss"] for r in summary["history"]]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:4]), losses

    # interrupted after step 1 (checkpoint), resumed to 3 == 3 uninterrupted steps (steps=30 as above: the
    # same lr schedule, so the same compiled step)
    same = ("steps=30", "optim.warmup_steps=0")
    ref = Sam2Trainer(_cfg(vos_set, tmp_path / "ref", *same), mesh=mesh)
    ref.run(until=3)
    ref.close()
    a = Sam2Trainer(_cfg(vos_set, tmp_path / "cut", *same), mesh=mesh)
    a.run(until=1)
    a.close()
    b = Sam2Trainer(_cfg(vos_set, tmp_path / "cut", *same, "checkpoint.resume=required"), mesh=mesh)
    assert b.resumed_from == 1
    b.run(until=3)
    b.close()
    assert ref.step == b.step == 3
    for k in ref.params:
        np.testing.assert_array_equal(np.asarray(ref.params[k]), np.asarray(b.params[k]), err_msg=k)
    jax.tree.map(np.testing.assert_array_equal, ref.opt_state, b.opt_state)

    model = load_model(summary["model_dir"])
    assert model.family == "sam2_video" and model.config.image_size == 128
    out = tmp_path / "eval"
    assert main(["eval", "vos", "--ckpt", summary["model_dir"], "--data", vos_set, "--split", "train", "--frames",
                 "4", "--limit", "1", "--out", str(out)]) == 0
    res = json.load(open(out / "vos_metrics.json"))
    assert 0.0 <= res["model"]["overall"]["JF"] <= 1.0


@pytest.mark.slow
def test_frozen_groups_stay_bit_identical(vos_set, tmp_path):
    from stvl_jax.train.sam2_trainer import Sam2Trainer, group_of

    tr = Sam2Trainer(_cfg(vos_set, tmp_path, "steps=2", "optim.groups.image_encoder.train=false",
                          "optim.groups.decoder.train=false"), mesh=_one_device_mesh())
    before = {k: np.asarray(v).copy() for k, v in tr.frozen.items()}
    start = {k: np.asarray(v).copy() for k, v in tr.params.items()}
    assert {group_of(k) for k in before} == {"image_encoder", "decoder", "fixed"}
    assert {group_of(k) for k in start} == {"memory"}
    tr.run()
    tr.close()
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(tr.frozen[k]), v, err_msg=k)
    assert any(not np.array_equal(np.asarray(tr.params[k]), v) for k, v in start.items())


@pytest.mark.slow
def test_image_only_training_leaves_the_memory_untouched(vos_set, tmp_path):
    from stvl_jax.train.sam2_trainer import Sam2Trainer, group_of

    tr = Sam2Trainer(_cfg(vos_set, tmp_path, "steps=2", "data.image_frames=true", "data.video_frames=false"),
                     mesh=_one_device_mesh())
    memory = {k: np.asarray(v).copy() for k, v in tr.frozen.items() if group_of(k) == "memory"}
    start = {k: np.asarray(v).copy() for k, v in tr.params.items()}
    assert memory and {group_of(k) for k in start} == {"image_encoder", "decoder"}
    tr.run()
    tr.close()
    for k, v in memory.items():
        np.testing.assert_array_equal(np.asarray(tr.frozen[k]), v, err_msg=k)
    for k in ("image/mask_decoder/iou_token", "image/vision_encoder/backbone/patch_embed/kernel"):
        assert not np.array_equal(np.asarray(tr.params[k]), start[k]), k


@pytest.mark.slow
def test_a_2x2x2_mesh_step_equals_one_device(vos_set, tmp_path):
    import jax

    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.sam2_trainer import Sam2Trainer

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (host) devices")
    over = ("steps=1", "data.batch_size=8", "data.frames=2", "data.max_objects=1")
    one = Sam2Trainer(_cfg(vos_set, tmp_path / "one", *over), mesh=_one_device_mesh())
    one.run()
    one.close()
    eight = Sam2Trainer(_cfg(vos_set, tmp_path / "eight", *over), mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    eight.run()
    eight.close()
    for k in one.params:
        np.testing.assert_allclose(np.asarray(eight.params[k]), np.asarray(one.params[k]), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


@pytest.mark.slow
def test_one_frame_clips_from_scratch_have_finite_gradients(tmp_path):
    # image training (data.frames=1): every frame is an initial conditioning frame, but under vmap the memory
    # branch is computed too (a select), where the pointer-offset normalisation min(T, max) - 1 was 0. This
    # batch (fresh sam2_tiny, 16 one-frame clips of the 64-video set) gave NaN gradients at step 1 before.
    from flax import nnx

    from data_pipelines.synthetic import generate_dataset
    from data_pipelines.vos import PromptConfig, VosClipConfig, VosReader, clip_arrays, simulate_prompts, \
        vos_synth_config
    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
    from stvl_jax.models.sam2.video_model import init_video_model
    from stvl_jax.train.sam2_config import Sam2ModelSection, resolve_model_config
    from stvl_jax.train.sam2_loss import Sam2LossConfig
    from stvl_jax.train.sam2_step import clip_batch, clip_loss

    generate_dataset(str(tmp_path), vos_synth_config(num_videos=64, seed=0), workers=1)
    reader = VosReader(str(tmp_path), "train", VosClipConfig(num_frames=1, frame_stride=2, max_objects=3), decode=True)
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(16):
        clip = reader.sample(rng)
        samples.append(clip_arrays(clip, simulate_prompts(clip, rng, PromptConfig(prob_points=1.0, prob_box=1.0)),
                                   max_objects=3))
    batch = clip_batch(samples, Sam2PreprocessConfig(image_size=128))
    model = init_video_model(resolve_model_config(Sam2ModelSection(config="sam2_tiny")), seed=0)
    grads = nnx.grad(lambda m: clip_loss(m, batch, Sam2LossConfig(), cond_capacity=2, clicks=False,
                                         mask_prompts=False)[0])(model)
    bad = [p for p, v in nnx.to_flat_state(grads) if not np.isfinite(np.asarray(v.get_value())).all()]
    assert not bad, bad[:3]
