"""SAM2's differentiable clip forward and loss (promptable video segmentation training, as SAM2 trains).

Per clip of T frames and O object slots, each object runs its own pass over the frames, in SAM2's training
order: its conditioning (prompted) frames first, then its other frames from its first prompt on, in time order
(`processing_order`; frames before an object's first prompt are not processed and carry no loss, as the tracker
at inference starts an object at its prompt). A conditioning frame attends to no memory (SAM2's initial
conditioning frames); every other frame attends to the object's memory bank (conditioning frames, including
later ones as SAM2 training does, and the previous tracked frames), so the loss of tracked frames trains the
memory attention, memory encoder and object pointers. Per frame:

    prompt      box (points labelled 2/3) or a click -> decoder (multimask for a single click, single for a box,
                SAM2's multimask_min/max_pt_num rule); a mask prompt is used as the output (`mask_as_output`)
    tracked     no prompt -> decoder with multimask (`multimask_output_for_tracking`)
    memory      the chosen output (highest predicted IoU), binarised on prompted frames, sigmoid otherwise,
                -> memory encoder (+ occlusion embedding) -> stored with the object pointer

The loss is `sam2_loss.sam2_step_losses` on the decoder's outputs upsampled to the ground truth's size (a
single-mask output is repeated over the M slots, which leaves the min-over-outputs and IoU-mean rules exact),
summed over frames and objects, divided by the number of objects (SAM2's normalisation). Mask-prompt frames
are left out: their output is the prompt itself, a constant with no gradient. Not modelled (yet): SAM2's
correction clicks on conditioning frames and memory-attention dropout.

Image term (optional, `data.image_frames`): SAM2 trains on image batches beside video ones; here every frame
where an object is visible is also decoded from a noisy box without memory (`image_term`), which gives the
prompt path T times the supervision of the one or two prompted frames per object (the tiny from-scratch model
otherwise learns to ignore the box: research/notes/sam2_learnability.md).

    batch = clip_batch(samples, preprocessing)                 # host numpy, fixed shapes
    loss, metrics = clip_loss(model, batch, Sam2LossConfig(), cond_capacity=2)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.vos.prompts import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, box_prompt
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig, preprocess_frames, resize_bilinear_antialias
from stvl_jax.models.sam2.memory_bank import MemoryBank, condition_on_memory
from stvl_jax.models.sam2.position import sine_2d
from stvl_jax.models.sam2.tracker_step import NO_OBJ_SCORE, frame_features, mask_as_output
from stvl_jax.train.sam2_loss import Sam2LossConfig, sam2_step_losses

BOX_LABEL = 2  # a prompt whose first label is a box corner is a box (single-mask output)


# ------------------------------------------------------------------------------------------ host side
def processing_order(cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cond (O, T) bool -> (order (O, T) int32 frame per slot, active (O, T) bool per slot): the object's
    conditioning frames, then its later non-conditioning frames, then (inactive) the frames before its first
    prompt. An object without a prompt (a padding slot) is inactive throughout."""
    o, t = cond.shape
    order, active = np.zeros((o, t), np.int32), np.zeros((o, t), bool)
    for i in range(o):
        c = np.flatnonzero(cond[i])
        if c.size == 0:
            order[i] = np.arange(t)
            continue
        first = int(c[0])
        rest = [k for k in range(first, t) if not cond[i, k]]
        before = list(range(first))
        order[i] = list(c) + rest + before
        active[i, :len(c) + len(rest)] = True
    return order, active


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(..., H, W) bool -> (..., size, size) bool (the frames' antialiased resize, thresholded at half)."""
    lead, (h, w) = masks.shape[:-2], masks.shape[-2:]
    if (h, w) == (size, size):
        return masks.astype(bool)
    x = (masks.reshape(-1, h, w, 1).astype(np.uint8) * 255)
    return (resize_bilinear_antialias(x, size, size)[..., 0] >= 128).reshape(*lead, size, size)


def image_boxes(masks: np.ndarray, valid: np.ndarray, rng: np.random.Generator, scale: np.ndarray,
                noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """masks (O, T, H, W) bool, valid (O,) -> (boxes (O, T, 2, 2) f32 as corner points in model-input pixels,
    present (O, T) bool): a noisy box (`box_prompt`, SAM2's `sample_box_points`) on every frame where the object
    is visible, for the image term of `clip_loss`."""
    o, t = masks.shape[:2]
    boxes, present = np.zeros((o, t, 2, 2), np.float32), masks.any((2, 3)) & valid[:, None]
    for i, k in zip(*np.nonzero(present)):
        boxes[i, k] = box_prompt(masks[i, k], rng, noise).reshape(2, 2) * scale
    return boxes, present


def clip_batch(samples: list[dict[str, np.ndarray]], pre: Sam2PreprocessConfig,
               image_rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """`data_pipelines.vos.clip_arrays` dicts (with frames, same shapes) -> the model-input batch (B leading):

    pixel_values (B, T, 3, S, S) f32   gt (B, O, T, S, S) f32      object_valid (B, O) bool
    cond (B, O, T) bool                points (B, O, T, P, 2) f32 model-input pixels; labels (B, O, T, P) i32
    mask_inputs (B, O, T, S, S) f32    has_mask (B, O, T) bool      order, active (B, O, T) (`processing_order`)

    With `image_rng`, also the image term's `image_boxes` (B, O, T, 2, 2) and `image_present` (B, O, T).
    """
    s = pre.image_size
    keys = ("pixel_values", "gt", "object_valid", "cond", "points", "labels", "mask_inputs", "has_mask", "order",
            "active", *(("image_boxes", "image_present") if image_rng is not None else ()))
    out: dict[str, list] = {k: [] for k in keys}
    for a in samples:
        if "frames" not in a:
            raise ValueError("clip_batch: the clips carry no decoded frames (VosReader(decode=True))")
        h, w = a["frames"].shape[1:3]
        out["pixel_values"].append(preprocess_frames(a["frames"], pre))
        out["gt"].append(_resize_masks(a["masks"], s).astype(np.float32))
        out["object_valid"].append(a["object_valid"])
        cond = a["cond"] & a["object_valid"][:, None]
        out["cond"].append(cond)
        out["points"].append((a["point_coords"] * np.asarray([s / w, s / h], np.float32)).astype(np.float32))
        out["labels"].append(a["point_labels"])
        out["mask_inputs"].append(_resize_masks(a["mask_inputs"], s).astype(np.float32))
        out["has_mask"].append(a["has_mask_input"])
        order, active = processing_order(cond)
        out["order"].append(order)
        out["active"].append(active)
        if image_rng is not None:
            boxes, present = image_boxes(a["masks"], a["object_valid"], image_rng,
                                         np.asarray([s / w, s / h], np.float32))
            out["image_boxes"].append(boxes)
            out["image_present"].append(present)
    return {k: np.stack(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ device side
def _upsample(x: jax.Array, size: int) -> jax.Array:
    return jax.image.resize(x, x.shape[:-2] + (size, size), method="bilinear", antialias=False)


def heads(model, pix, high_res, points, labels, dense, multimask: bool):
    """The decoder's candidate outputs for one object (batch 1): pix (1, e, e, D); points (1, N, 2) / labels
    (1, N) or None (no prompt). -> masks (M, 4e, 4e) (a single output repeated M = 3 times), iou (M,),
    tokens (M, D), obj (1,); masks where the object is predicted absent are NO_OBJ_SCORE (as at inference)."""
    img = model.image
    if points is None:  # no prompt: one "not a point", as the tracker's decode
        points, labels = jnp.zeros((1, 1, 2), jnp.float32), -jnp.ones((1, 1), jnp.int32)
    sparse, dense_emb = img.prompt_encoder(points[:, None], labels[:, None], None, dense, batch_size=1)
    out = img.mask_decoder(pix, img.image_positional_embeddings()[None], sparse, dense_emb, high_res,
                           multimask_output=multimask, training=True)
    masks, iou, tokens = out.masks[0, 0], out.iou_scores[0, 0], out.mask_tokens[0, 0]
    obj = out.object_score_logits[0, 0]
    if not multimask:
        masks, iou, tokens = (jnp.repeat(x, 3, axis=0) for x in (masks, iou, tokens))
    masks = jnp.where(obj[0] > 0, masks, NO_OBJ_SCORE)
    return masks, iou, tokens, obj


def object_pass(model, feats, pos_table, obj: dict, loss_cfg: Sam2LossConfig, *, cond_capacity: int,
                clicks: bool = True, mask_prompts: bool = True):
    """One object over the clip (`lax.scan` over its processing order). feats: the clip's `frame_features`
    (T leading); obj: this object's slices of `clip_batch` (no B, O axes). clicks / mask_prompts (static):
    whether the batch may hold click or mask prompts (False drops those branches from the compiled step; boxes
    are always handled). -> (summed losses dict, (T,) chosen low-res logits in frame order)."""
    cfg = model.config
    s0, s1, top, top_pos = feats
    t = top.shape[0]
    e, d, m = cfg.embedding_size, cfg.image.vision.fpn_hidden_size, cfg.memory_bank.mem_dim
    size = cfg.image_size
    emb = model.memory_embeddings
    bank = MemoryBank.empty(t, e * e, m, cfg.memory_bank.hidden_dim, dtype=jnp.float32)
    no_mem = model.image.no_memory_embedding[...]

    def step(bank, slot):
        f, active = obj["order"][slot], obj["active"][slot]
        is_cond, has_mask = obj["cond"][f], obj["has_mask"][f]
        top_f, pos_f = top[f], top_pos[f]
        high_res = (s0[f][None], s1[f][None])
        pix = condition_on_memory(model.memory_attention, emb, bank, top_f.reshape(e * e, d),
                                  pos_f.reshape(e * e, d), pos_table, f, is_cond, no_mem,
                                  cond_capacity=cond_capacity, num_frames=t, training=True).reshape(1, e, e, d)
        pts, lab = obj["points"][f][None], obj["labels"][f][None]
        tracked = heads(model, pix, high_res, None, None, None, multimask=True)
        prompted = heads(model, pix, high_res, pts, lab, None, multimask=False)
        if clicks:
            click = heads(model, pix, high_res, pts, lab, None, multimask=True)
            is_box = lab[0, 0] == BOX_LABEL
            prompted = tuple(jnp.where(is_box, a, b) for a, b in zip(prompted, click))
        masks, iou, tokens, score = (jnp.where(is_cond, a, b) for a, b in zip(prompted, tracked))
        best = jnp.argmax(iou)
        low, token = masks[best], tokens[best]
        pointer = emb.object_pointer(token[None], score[None])[0]
        # a mask prompt is the output itself (SAM2 `use_mask_input_as_output_without_sam`)
        use_mask = is_cond & has_mask
        if mask_prompts:
            m_low, _, m_ptr, m_obj = mask_as_output(model, top_f[None], high_res, obj["mask_inputs"][f][None])
            low = jnp.where(use_mask, m_low[0], low)
            pointer = jnp.where(use_mask, m_ptr[0], pointer)
            score = jnp.where(use_mask, m_obj[0], score)
        high = _upsample(low[None].astype(jnp.float32), size)
        mem_in = emb.mask_for_memory(high, is_cond)
        features, _ = model.memory_encoder(top_f[None], mem_in)
        features = emb.add_occlusion(features, score[None])
        new = bank.store(f, features[0].reshape(e * e, m), pointer, is_cond)
        bank = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, bank)

        logits = _upsample(masks.astype(jnp.float32), size)
        parts = sam2_step_losses(logits[None], iou[None], score[None], obj["gt"][f][None], loss_cfg, 1.0)
        weight = (active & ~use_mask).astype(jnp.float32)
        return bank, ({k: v * weight for k, v in parts.items()}, jnp.where(active, low, NO_OBJ_SCORE), f)

    _, (parts, lows, frames) = jax.lax.scan(step, bank, jnp.arange(t))
    lows_by_frame = jnp.zeros_like(lows).at[frames].set(lows)
    return {k: v.sum() for k, v in parts.items()}, lows_by_frame


def image_term(model, feats, boxes, present, gt, loss_cfg: Sam2LossConfig):
    """SAM2's image batches, made of the clip's own frames: each object decoded from a box on every frame where
    it is visible, without memory (a first conditioning frame's features), the single-mask output scored with
    `sam2_step_losses`. feats: the clip's `frame_features`; boxes (O, T, 2, 2), present (O, T) (`image_boxes`);
    gt (O, T, S, S). -> losses dict, (O,) each: summed over the object's frames."""
    s0, s1, top, _ = feats
    size = model.config.image_size
    pix = top + model.image.no_memory_embedding[...].reshape(-1).astype(top.dtype)
    labels = jnp.asarray([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], jnp.int32)

    def frame(pix_f, s0_f, s1_f, box, gt_f, on):
        masks, iou, _, obj = heads(model, pix_f[None], (s0_f[None], s1_f[None]), box[None], labels, None,
                                   multimask=False)
        logits = _upsample(masks.astype(jnp.float32), size)
        parts = sam2_step_losses(logits[None], iou[None], obj[None], gt_f[None], loss_cfg, 1.0)
        return {k: v * on for k, v in parts.items()}

    # inner: the frames (features shared by the objects); outer: the objects
    per = jax.vmap(jax.vmap(frame), in_axes=(None, None, None, 0, 0, 0))(
        pix, s0, s1, boxes, gt, present.astype(jnp.float32))
    return {k: v.sum(-1) for k, v in per.items()}


def clip_loss(model, batch: dict, loss_cfg: Sam2LossConfig, *, cond_capacity: int, clicks: bool = True,
              mask_prompts: bool = True, video: bool = True):
    """The batch's SAM2 loss (mean over clips of: sum over frames and objects / number of objects) and the
    per-term metrics. batch: `clip_batch` arrays (B leading); clicks / mask_prompts as `object_pass`. With the
    batch's `image_boxes` (`clip_batch(image_rng=...)`), the `image_term` is added to each object's losses;
    video=False (static) leaves the memory pass out (image-only training; needs `image_boxes`)."""
    cfg = model.config
    e, m = cfg.embedding_size, cfg.memory_bank.mem_dim
    pos_table = jnp.asarray(sine_2d(e, e, m).reshape(e * e, m), jnp.float32)
    keys = ("gt", "cond", "points", "labels", "mask_inputs", "has_mask", "order", "active")
    images = ("image_boxes", "image_present") if "image_boxes" in batch else ()
    if not (video or images):
        raise ValueError("clip_loss: video=False needs the batch's image_boxes (clip_batch(image_rng=...))")

    def one_clip(clip):
        feats = frame_features(model, clip["pixel_values"])
        terms = []
        if video:
            terms.append(jax.vmap(lambda o: object_pass(model, feats, pos_table, o, loss_cfg,
                                                        cond_capacity=cond_capacity, clicks=clicks,
                                                        mask_prompts=mask_prompts)[0])({k: clip[k] for k in keys}))
        if images:
            terms.append(image_term(model, feats, clip["image_boxes"], clip["image_present"], clip["gt"], loss_cfg))
        per_obj = {k: sum(t[k] for t in terms) for k in terms[0]}
        valid = clip["object_valid"].astype(jnp.float32)
        n = jnp.maximum(valid.sum(), 1.0)
        return {k: (v * valid).sum() / n for k, v in per_obj.items()}

    parts = jax.vmap(one_clip)({k: batch[k] for k in (*keys, *images, "pixel_values", "object_valid")})
    parts = {k: v.mean() for k, v in parts.items()}
    loss = (loss_cfg.weight_mask * parts["loss_mask"] + loss_cfg.weight_dice * parts["loss_dice"]
            + loss_cfg.weight_iou * parts["loss_iou"] + loss_cfg.weight_class * parts["loss_class"])
    return loss, parts
