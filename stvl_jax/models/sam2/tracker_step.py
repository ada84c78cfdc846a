"""One SAM2 tracking step on one frame for all objects at once (pure, jittable, differentiable): transformers'
`Sam2VideoModel.forward(session, frame_idx)` = `_run_single_frame_inference` per object + `_batch_encode_memories`.

Every object o of the O objects has a mode for this frame (int32, traced):

    INACTIVE  not registered yet (nothing computed, its bank untouched)
    TRACK     tracked frame: memory-conditioned features -> decoder without prompt -> new memory (TRACKED)
    REUSE     the frame is one of its conditioning frames and it got no new prompt: the stored output is kept
              (the caller keeps it), no new memory
    POINTS    click/box prompt (boxes are the points labelled 2, 3): decoder with the points -> new memory
    MASK      mask prompt: the mask is the output (`_use_mask_as_output`: logits +-10, the object pointer from the
              decoder run on the mask), no memory attention -> new memory

and `init` (bool): a prompt on a frame the object was not tracked on yet (HF `is_init_cond_frame`): it attends
to no memory (`no_memory_embedding` instead) and its memory is stored as a conditioning frame. Memories of
every object on the frame are binarised when any object on the frame has a prompt (`binarize`, as HF batches
them). Objects are batched (`jax.vmap` over banks); static: the number of points of POINTS objects, whether
MASK objects exist, the bank's conditioning capacity (the direction is traced: one compilation serves both).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from stvl_jax.models.sam2.memory_bank import MemoryBank, condition_on_memory
from stvl_jax.models.sam2.position import sine_2d
from stvl_jax.models.sam2.prompt_encoder import resize_masks

INACTIVE, TRACK, REUSE, POINTS, MASK = 0, 1, 2, 3, 4
NO_OBJ_SCORE = -1024.0  # HF / Meta: low-res logits of a frame where the object is predicted absent
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # a mask prompt's logits (sigmoid(-10) ~ 4.5e-5)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepOutput:
    """low_res_logits (O, 4e, 4e); object_score_logits (O,); high_res_logits (O, S, S); updated (O,) bool: the
    objects whose output and memory this step produced (TRACK / POINTS / MASK)."""

    low_res_logits: jax.Array
    object_score_logits: jax.Array
    high_res_logits: jax.Array
    updated: jax.Array


def _upsample(x: jax.Array, size: int) -> jax.Array:
    # torch F.interpolate(bilinear, align_corners=False) upsampling: half-pixel centres, no antialiasing
    return jax.image.resize(x, x.shape[:-2] + (size, size), method="bilinear", antialias=False)


def decode(model, pix: jax.Array, high_res: tuple[jax.Array, jax.Array], points, labels, dense_masks,
           multimask: bool):
    """HF `_single_frame_forward` on given image embeddings, one prompt set per object.
    pix (O, e, e, D); high_res (s0, s1) each (O, ...); points (O, N, 2) model-input pixels or None; labels (O, N);
    dense_masks (O, 1, 4e, 4e) or None. Returns (low (O, 4e, 4e), high (O, S, S), pointer (O, D), obj (O, 1))."""
    img, emb = model.image, model.memory_embeddings
    o = pix.shape[0]
    if points is None:  # no prompt: one "not a point"
        points, labels = jnp.zeros((o, 1, 2), jnp.float32), -jnp.ones((o, 1), jnp.int32)
    sparse, dense = img.prompt_encoder(points[:, None], labels[:, None], None, dense_masks, batch_size=o)
    out = img.mask_decoder(pix, img.image_positional_embeddings()[None], sparse, dense, high_res,
                           multimask_output=multimask)
    masks, iou, tokens = out.masks[:, 0], out.iou_scores[:, 0], out.mask_tokens[:, 0]
    obj = out.object_score_logits[:, 0]
    masks = jnp.where((obj > 0)[:, :, None, None], masks, NO_OBJ_SCORE)
    best = jnp.argmax(iou, axis=-1) if multimask else jnp.zeros((o,), jnp.int32)
    low = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)[:, 0]
    token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
    high = _upsample(low.astype(jnp.float32), model.config.image_size).astype(low.dtype)
    return low, high, emb.object_pointer(token, obj), obj


def mask_as_output(model, top: jax.Array, high_res, masks: jax.Array):
    """HF `_use_mask_as_output`: masks (O, S, S) {0, 1} -> (low, high, pointer, obj) as `decode`."""
    emb = model.memory_embeddings
    masks = masks.astype(top.dtype)
    high = masks * MASK_OUT_SCALE + MASK_OUT_BIAS
    low = resize_masks(high[:, None], model.config.image.prompt_encoder.mask_input_size)[:, 0]
    dense = jnp.moveaxis(emb.mask_downsample(masks[..., None]), -1, 1)  # (O, 1, 4e, 4e)
    _, _, pointer, _ = decode(model, top, high_res, None, None, dense, multimask=True)
    present = jnp.any(masks > 0, axis=(1, 2))[:, None].astype(pointer.dtype)
    obj = MASK_OUT_SCALE * present + MASK_OUT_BIAS
    pointer = present * pointer + (1 - present) * emb.no_object_pointer[...].astype(pointer.dtype)
    return low, high, pointer, obj


def _pick(mode, choices):
    """Per-object select: choices {mode: (low, high, pointer, obj)}."""
    out = None
    for m, values in choices.items():
        if out is None:
            out = values
            continue
        sel = mode == m
        out = tuple(jnp.where(sel.reshape((-1,) + (1,) * (a.ndim - 1)), a, b) for a, b in zip(values, out))
    return out


def frame_features(model, pixel_values: jax.Array) -> tuple[jax.Array, ...]:
    """pixel_values (1, 3, S, S) -> (feat_s0, feat_s1 (decoder-projected), top (1, e, e, D), top_pos (1, e, e, D)):
    a frame's image features, computed once per frame (HF caches them in the session)."""
    levels, pos = model.image.image_features(pixel_values.astype(model.dtype))
    return (*levels, pos[-1])


def frame_step(model, banks: MemoryBank, features: tuple[jax.Array, ...], frame_idx, mode: jax.Array,
               init: jax.Array, binarize, points: jax.Array | None = None, labels: jax.Array | None = None,
               masks: jax.Array | None = None, *, reverse=False, cond_capacity: int, num_frames=None,
               training: bool = False, spatial_slots: int | None = None) -> tuple[MemoryBank, StepOutput]:
    """One frame, all objects. banks: a `MemoryBank` with a leading object axis (O, T, ...); features: the
    frame's `frame_features`; mode (O,) int32 and init (O,) bool as in the module docstring; binarize and
    reverse: bool scalars (may be traced); points (O, N, 2) / labels (O, N) for POINTS objects (others' rows are
    ignored); masks (O, S, S) for MASK objects; spatial_slots (static): an upper bound on any object's valid
    spatial memories, to attend to only that many slots (`memory_bank.assemble_memory`; None: all). Returns
    (banks with this frame's memories stored for the updated objects, StepOutput)."""
    cfg = model.config
    s0, s1, top, top_pos = features
    o = mode.shape[0]
    e, d, m = cfg.embedding_size, cfg.image.vision.fpn_hidden_size, cfg.memory_bank.mem_dim
    high_res = (jnp.broadcast_to(s0, (o, *s0.shape[1:])), jnp.broadcast_to(s1, (o, *s1.shape[1:])))
    top_o = jnp.broadcast_to(top, (o, *top.shape[1:]))
    pos_table = jnp.asarray(sine_2d(e, e, m).reshape(e * e, m), top.dtype)
    feats, feats_pos = top[0].reshape(e * e, d), top_pos[0].reshape(e * e, d)
    no_mem = model.image.no_memory_embedding[...]

    def condition(bank, initial):
        return condition_on_memory(model.memory_attention, model.memory_embeddings, bank, feats, feats_pos, pos_table,
                                   frame_idx, initial, no_mem, cond_capacity=cond_capacity, reverse=reverse,
                                   num_frames=num_frames, training=training, spatial_slots=spatial_slots)

    pix = jax.vmap(condition)(banks, init & (mode == POINTS)).reshape(o, e, e, d)
    tc = cfg.tracking
    choices = {TRACK: decode(model, pix, high_res, None, None, None,
                             multimask=tc.multimask_output_in_sam and tc.multimask_output_for_tracking
                             and tc.multimask_min_pt_num <= 0 <= tc.multimask_max_pt_num)}
    if points is not None:
        n = points.shape[1]
        in_range = tc.multimask_output_in_sam and tc.multimask_min_pt_num <= n <= tc.multimask_max_pt_num
        single = decode(model, pix, high_res, points, labels, None, multimask=False)
        if in_range:
            multi = decode(model, pix, high_res, points, labels, None, multimask=True)
            # multimask on a prompted frame: initial conditioning frames, or any frame when tracking uses it
            use_multi = init | tc.multimask_output_for_tracking
            single = _pick(use_multi.astype(jnp.int32), {0: single, 1: multi})
        choices[POINTS] = single
    if masks is not None:
        choices[MASK] = mask_as_output(model, top_o, high_res, masks)
    low, high, pointer, obj = _pick(mode, choices)

    features, _ = model.memory_encoder(top_o, model.memory_embeddings.mask_for_memory(high, binarize))
    features = model.memory_embeddings.add_occlusion(features, obj)
    updated = (mode == TRACK) | (mode == POINTS) | (mode == MASK)

    def store(bank, f, p, cond, upd):
        return bank.store(frame_idx, f.reshape(e * e, m), p, cond, update=upd)

    banks = jax.vmap(store)(banks, features, pointer, init, updated)
    return banks, StepOutput(low, obj[:, 0], high, updated)
