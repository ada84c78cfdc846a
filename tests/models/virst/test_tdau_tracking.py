"""`segment_with_anchors` against the project's SAM2 tracking step (`tracker_step.frame_step`, exact vs
transformers), driven by hand in VIRST's order: anchors prompted with a box's sparse embeddings are the box
prompt itself, so both must give the same masks (fp32 banks, 1e-4). With at most 3 anchors every anchor is
selected and Meta's pointer rule (VIRST) equals transformers' (the step's). Plus: gradients reach every anchor's
prompts through the training forward; with traced anchors (VIRST's random training ones) it is the same."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stvl_jax.models.sam2.memory_bank import MemoryBank
from stvl_jax.models.sam2.tracker_step import POINTS, TRACK, frame_features, frame_step
from stvl_jax.models.virst.tdau import segment_with_anchors
from stvl_jax.train.virst_loss import VirstLossConfig, mask_losses
from tdau_helpers import IMAGE, tiny_model

T, ANCHORS = 5, (1, 3)
# VIRST's processing orders (frame, anchor index or -1), written out by hand: evaluation = the anchors, then the
# other frames from frame 0 on; training = the first anchor, then every other frame in time order
ORDER = {False: [(1, 0), (3, 1), (0, -1), (2, -1), (4, -1)], True: [(1, 0), (0, -1), (2, -1), (3, 1), (4, -1)]}
# one box per object and anchor, (x0, y0, x1, y1) model-input pixels
BOXES = np.array([[[8, 10, 40, 44], [12, 6, 50, 40]], [[30, 4, 60, 30], [20, 20, 62, 58]]], np.float32)  # (O, A, 4)
TOL = 1e-4


def _pixels():
    return np.random.default_rng(3).normal(size=(T, 3, IMAGE, IMAGE)).astype(np.float32)


def _box_points(k):
    return jnp.asarray(BOXES[:, k].reshape(-1, 2, 2)), jnp.tile(jnp.asarray([[2, 3]], jnp.int32), (len(BOXES), 1))


def _box_sparse(model):
    """(O, A, 3, D): each box's sparse embeddings (2 corners + SAM2's padding "not a point")."""
    rows = []
    for k in range(len(ANCHORS)):
        pts, lab = _box_points(k)
        rows.append(model.image.prompt_encoder(pts[:, None], lab[:, None], None, None)[0][:, 0])
    return jnp.stack(rows, axis=1)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("training",))
def _ref_step(graphdef, state, banks, pixels, f, mode, init, points, labels, *, training):
    model = nnx.merge(graphdef, state)
    feats = frame_features(model, pixels[f][None])
    return frame_step(model, banks, feats, f, mode, init, False, points, labels, cond_capacity=len(ANCHORS),
                      num_frames=T, training=training)


def _reference(model, pixels, *, training):
    """VIRST's order with the tracking step: anchors = box prompts (initial conditioning frames), memories from
    sigmoid masks (binarize False), fp32 banks. -> (low (O, T, h, w), obj (O, T))."""
    graphdef, state = nnx.split(model)
    cfg, o = model.config, len(BOXES)
    e = cfg.embedding_size
    one = MemoryBank.empty(T, e * e, cfg.memory_bank.mem_dim, cfg.memory_bank.hidden_dim, dtype=jnp.float32)
    banks = jax.tree.map(lambda a: jnp.broadcast_to(a, (o, *a.shape)), one)
    low, obj = {}, {}
    for f, k in ORDER[training]:
        pts, lab = _box_points(max(k, 0))
        mode = jnp.full((o,), POINTS if k >= 0 else TRACK, jnp.int32)
        banks, out = _ref_step(graphdef, state, banks, jnp.asarray(pixels), f, mode, jnp.full((o,), k >= 0), pts,
                               lab, training=training)
        low[f], obj[f] = np.asarray(out.low_res_logits), np.asarray(out.object_score_logits)
    return np.stack([low[f] for f in range(T)], 1), np.stack([obj[f] for f in range(T)], 1)


def _check_same(got, ref_low, ref_obj):
    assert (ref_obj > 0).any(), "the objects are absent everywhere: every mask would be NO_OBJ_SCORE"
    np.testing.assert_allclose(np.asarray(got.object_score_logits), ref_obj, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(got.low_res_logits), ref_low, atol=TOL, rtol=0)


@pytest.mark.slow  # ~1-2 min on a loaded CPU: the reference step and the anchored forward compile
def test_evaluation_order_equals_the_tracker_step_with_box_prompts():
    # a box counts 2 points: multimask_max_pt_num=2 makes the step decode 3 masks on it, as VIRST's evaluation
    # does on every anchor
    model = tiny_model(0, multimask_max_pt_num=2)
    pixels = _pixels()
    ref_low, ref_obj = _reference(model, pixels, training=False)
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, p, a: segment_with_anchors(nnx.merge(graphdef, s), p, ANCHORS, a, multimask=True,
                                                       bank_dtype=jnp.float32))
    got = run(state, jnp.asarray(pixels), _box_sparse(model))
    assert got.low_res_logits.shape == (len(BOXES), T, IMAGE // 4, IMAGE // 4) and got.iou.shape == (len(BOXES), T)
    _check_same(got, ref_low, ref_obj)


@pytest.mark.slow  # ~2 min: reference, forward and its gradient compile
def test_training_order_equals_the_tracker_step_and_gradients_reach_every_anchor():
    # training decodes one mask everywhere (no stability fallback): the step does so without multimask output
    model = tiny_model(0, stability=False, multimask_output_in_sam=False)
    pixels = _pixels()
    ref_low, ref_obj = _reference(model, pixels, training=True)
    graphdef, state = nnx.split(model)
    gt = jnp.asarray(np.random.default_rng(4).random((len(BOXES), T, IMAGE, IMAGE)) > 0.6, jnp.float32)

    def loss(prompts, s, p):
        out = segment_with_anchors(nnx.merge(graphdef, s), p, ANCHORS, prompts, multimask=False)
        parts = mask_losses(out.low_res_logits, out.iou, out.object_score_logits, gt, jnp.ones((len(BOXES), T)),
                            VirstLossConfig())
        return parts["bce"] + parts["dice"] + parts["iou"] + parts["occ"], out

    (value, got), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(_box_sparse(model), state,
                                                                          jnp.asarray(pixels))
    _check_same(got, ref_low, ref_obj)
    g = np.asarray(grads)
    assert np.isfinite(float(value)) and np.isfinite(g).all()
    # every object's prompts on every anchor move the loss (its own frame and, through memory, the others)
    assert (np.abs(g).sum(axis=(2, 3)) > 0).all(), np.abs(g).sum(axis=(2, 3))


@pytest.mark.slow  # ~1-2 min: the reference step and the forward compile
def test_traced_training_anchors_equal_the_tracker_step():
    """VIRST's random training anchors arrive as a traced array (one program for every draw): same masks as the
    tracker step driven in the training order by hand."""
    model = tiny_model(0, stability=False, multimask_output_in_sam=False)
    pixels = _pixels()
    ref_low, ref_obj = _reference(model, pixels, training=True)
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, p, anchors, a: segment_with_anchors(nnx.merge(graphdef, s), p, anchors, a,
                                                                multimask=False))
    got = run(state, jnp.asarray(pixels), jnp.asarray(ANCHORS, jnp.int32), _box_sparse(model))
    _check_same(got, ref_low, ref_obj)
