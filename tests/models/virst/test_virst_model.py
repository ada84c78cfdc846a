"""VirstModel assembly on the tiny config, with a TEST DOUBLE of the TDAU tracker (virst_helpers.FakeTdau):
LM logits and [SEG] hidden states against the plain Qwen-VL forward (the same weights, its own path), prompts and
anchors against the SegPrompter run by hand, and the initial fusion's effect on the sequence (causal: only
positions from the first [SEG] on change; gate 0 changes nothing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from virst_helpers import install_fake_tdau, tiny_config

from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.models.virst.model import init_virst_model
from stvl_jax.nn.params import flat_params

SEG = 512
T = 8  # anchors round(linspace(0, 7, 2)) = (0, 7)


def make_batch(model, seg_rows):
    """Two text rows; row r holds seg_rows[r] [SEG] tokens at hand-chosen positions. -> (ModelInputs, positions)."""
    rng = np.random.default_rng(0)
    L = 40
    ids = rng.integers(13, 240, size=(2, L)).astype(np.int64)
    positions = []
    for r, n in enumerate(seg_rows):
        pos = list(range(20 + r, 20 + r + 2 * n, 2))  # "(i) [SEG]," spacing
        ids[r, pos] = SEG
        positions.append(pos)
    inputs, _ = model.llm.prepare({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return jax.tree.map(jnp.asarray, inputs), positions


@nnx.jit(static_argnums=(3,))
def run(model, inputs, pixels, track):
    return model.forward(inputs, pixels, track=track)


@nnx.jit
def plain_lm(model, inputs):
    logits, hidden, _ = model.llm.forward(inputs, return_hidden=True)
    return logits, hidden


@pytest.mark.slow  # builds and compiles the tiny Qwen-VL + SAM2 (~3-4 min each on 2 shared cores)
@pytest.mark.parametrize("llm", ["qwen3vl_tiny", "qwen25vl_tiny"])
def test_forward_assembly(monkeypatch, llm):
    fake = install_fake_tdau(monkeypatch)
    cfg = tiny_config(llm=load_model_config(llm, ["text.vocab_size=513"]).to_dict())
    assert cfg.llm.family == ("qwen3_vl" if llm == "qwen3vl_tiny" else "qwen2_5_vl")
    model = init_virst_model(cfg, seed=0)
    inputs, positions = make_batch(model, [10, 7])
    pixels = jnp.asarray(np.random.default_rng(1).normal(size=(T, 3, 128, 128)), jnp.float32)
    out = run(model, inputs, pixels, True)

    logits, hidden = plain_lm(model, inputs)
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(logits), rtol=1e-5, atol=1e-5)
    for r, pos in enumerate(positions):
        np.testing.assert_allclose(np.asarray(out.seg_hidden[r, :len(pos)]), np.asarray(hidden[r, pos]),
                                   rtol=1e-5, atol=1e-5)
    assert np.asarray(out.seg_valid).tolist() == [[True] * 10, [True] * 7 + [False] * 3]

    feats = model.image_embeddings(pixels)
    assert feats.shape == (T, 8, 8, 128)
    prompts, scores = model.seg_prompter(out.seg_hidden, feats, out.seg_valid)
    np.testing.assert_allclose(np.asarray(out.prompts), np.asarray(prompts), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.frame_scores), np.asarray(scores), rtol=1e-5, atol=1e-6)
    assert out.prompts.shape == (2, T, 10, 128)
    assert out.anchor_frames == (0, 7)
    np.testing.assert_array_equal(np.asarray(out.anchor_prompts), np.asarray(out.prompts[:, [0, 7]]))
    assert fake.calls == [dict(anchor_frames=(0, 7), prompts_shape=(2, 2, 10, 128), pixels_shape=(T, 3, 128, 128),
                               multimask=False)]  # virst_tiny evaluates mask 0 (anchors.multimask_eval)
    assert out.tracking["iou"].shape == (2, T)
    # the tracker reuses the frame features the fusion read (SAM2's encoder runs once per forward)
    s0, s1, top, top_pos = out.tracking["features"]
    np.testing.assert_allclose(np.asarray(top), np.asarray(feats), rtol=1e-5, atol=1e-5)
    assert (s0.shape[:3], s1.shape[:3], top_pos.shape) == ((T, 32, 32), (T, 16, 16), (T, 8, 8, 128))


@pytest.mark.slow  # two more compiles of the tiny model
def test_initial_fusion_changes_only_from_the_first_seg(monkeypatch):
    install_fake_tdau(monkeypatch)
    cfg = tiny_config(initial_fusion={"enabled": True, "num_heads": 4})
    model = init_virst_model(cfg, seed=0)
    inputs, positions = make_batch(model, [10, 10])
    pixels = jnp.asarray(np.random.default_rng(1).normal(size=(T, 3, 128, 128)), jnp.float32)
    fused = run(model, inputs, pixels, False)
    plain, _ = plain_lm(model, inputs)
    first = min(p[0] for p in positions)
    np.testing.assert_allclose(np.asarray(fused.logits[:, :first]), np.asarray(plain[:, :first]), rtol=1e-5,
                               atol=1e-5)
    assert np.abs(np.asarray(fused.logits[:, first + 2:]) - np.asarray(plain[:, first + 2:])).max() > 1e-3
    flat_params(model)["initial_fusion/gate"].set_value(jnp.zeros(()))
    gated_off = run(model, inputs, pixels, False)
    np.testing.assert_allclose(np.asarray(gated_off.logits), np.asarray(plain), rtol=1e-5, atol=1e-5)
