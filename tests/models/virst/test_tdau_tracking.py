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


def _box_points(k, boxes=BOXES):
    return jnp.asarray(boxes[:, k].reshape(-1, 2, 2)), jnp.tile(jnp.asarray([[2, 3]], jnp.int32), (len(boxes), 1))


def _box_sparse(model, boxes=BOXES):
    """(O, A, 3, D): each box's sparse embeddings (2 corners + SAM2's padding "not a point")."""
    rows = []
    for k in range(boxes.shape[1]):
        pts, lab = _box_points(k, boxes)
        rows.append(model.image.prompt_encoder(pts[:, None], lab[:, None], None, None)[0][:, 0])
    return jnp.stack(rows, axis=1)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("training", "capacity"))
def _ref_step(graphdef, state, banks, pixels, f, mode, init, points, labels, *, training, capacity=len(ANCHORS)):
    model = nnx.merge(graphdef, state)
    feats = frame_features(model, pixels[f][None])
    return frame_step(model, banks, feats, f, mode, init, False, points, labels, cond_capacity=capacity,
                      num_frames=T, training=training)


def _reference(model, pixels, *, training, order=None, boxes=BOXES):
    """VIRST's order with the tracking step: anchors = box prompts (initial conditioning frames), memories from
    sigmoid masks (binarize False), fp32 banks. -> (low (O, T, h, w), obj (O, T))."""
    graphdef, state = nnx.split(model)
    cfg, o = model.config, len(BOXES)
    e = cfg.embedding_size
    one = MemoryBank.empty(T, e * e, cfg.memory_bank.mem_dim, cfg.memory_bank.hidden_dim, dtype=jnp.float32)
    banks = jax.tree.map(lambda a: jnp.broadcast_to(a, (o, *a.shape)), one)
    low, obj = {}, {}
    for f, k in ORDER[training] if order is None else order:
        pts, lab = _box_points(max(k, 0), boxes)
        mode = jnp.full((o,), POINTS if k >= 0 else TRACK, jnp.int32)
        banks, out = _ref_step(graphdef, state, banks, jnp.asarray(pixels), f, mode, jnp.full((o,), k >= 0), pts,
                               lab, training=training, capacity=boxes.shape[1])
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


@pytest.mark.slow  # ~2 min: the reference step and the forward compile
def test_training_with_every_frame_an_anchor_decodes_each_frame_from_its_own_prompt():
    """VIRST's default training (its keyframes all conditioning frames; `virst_step.train_anchor_frames` "all"):
    every frame is the tracking step's prompted decode of that frame alone (an initial conditioning frame: no
    memory), whatever the other frames' prompts are."""
    model = tiny_model(0, stability=False, multimask_output_in_sam=False)
    pixels = _pixels()
    boxes = np.concatenate([BOXES, BOXES[:, ::-1] + 3, BOXES[:, :1] - 4], axis=1)  # (O, T, 4): one per frame
    assert boxes.shape[1] == T
    ref_low, ref_obj = _reference(model, pixels, training=True, order=[(f, f) for f in range(T)], boxes=boxes)
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, p, a: segment_with_anchors(nnx.merge(graphdef, s), p, tuple(range(T)), a,
                                                       multimask=False))
    _check_same(run(state, jnp.asarray(pixels), _box_sparse(model, boxes)), ref_low, ref_obj)


@pytest.mark.slow  # ~1-2 min: two tracking programs compile
def test_the_tiny_recipe_evaluates_the_mask_its_training_trains():
    """VIRST's loss trains mask 0 (its training decodes one mask). virst_tiny's SAM2 never learns the multimask
    outputs 1-3 for [SEG] prompts, so the predictor (`infer.virst._track`) must decode mask 0, in evaluation
    order: on the first anchor (no memory in either order) it gives exactly the training forward's logits. It
    decoded the best-IoU multimask output: Dice 0.04 on a clip the training forward fitted at 0.99
    (research/notes/virst_learnability.md)."""
    from stvl_jax.infer.virst import _track
    from stvl_jax.models.virst.config import load_virst_config

    cfg = load_virst_config("virst_tiny")
    model = tiny_model(0, stability=cfg.sam2.image.mask_decoder.dynamic_multimask_via_stability)
    pixels, prompts = jnp.asarray(_pixels()), _box_sparse(model)
    graphdef, state = nnx.split(model)
    evaluated = jax.jit(lambda s: _track(nnx.merge(graphdef, s), cfg, pixels, ANCHORS, prompts[:1]))(state)
    trained = jax.jit(lambda s: segment_with_anchors(nnx.merge(graphdef, s), pixels, ANCHORS, prompts[:1],
                                                     multimask=False))(state)
    first = ANCHORS[0]
    assert float(trained.object_score_logits[0, first]) > 0, "object absent: both masks would be NO_OBJ_SCORE"
    np.testing.assert_allclose(np.asarray(evaluated[0][first]), np.asarray(trained.low_res_logits[0, first]),
                               atol=TOL, rtol=0)


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
