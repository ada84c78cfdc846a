"""VIRST's training forward and loss over a batch of expressions (AIDASLab/VIRST `VirstForCausalLM.forward`).

Per expression (one row of the batch = one referring expression of one video, its target the union of the
referred objects), `VirstModel.forward` in training mode:

    teacher-forced prompt (the answer with its Q [SEG] tokens in the input) -> LLM logits + [SEG] hidden states
    SegPrompter([SEG] hidden, SAM2 features of the T segmentation frames) -> per-frame prompts
    SAM2 inside the forward (`tdau.segment_with_anchors`, multimask off = VIRST's training order): the anchors
    get the decoded prompts, other frames propagate through memory. Anchors: the batch's `anchor_frames` (VIRST's
    random training anchors, `data.anchors=random`), every frame (`all`, VIRST's default training: its keyframes
    are all conditioning frames, nothing tracked) or the evaluation rule `tdau.anchor_frames_for(T)` (`uniform`)

and the loss is `virst_loss`: the LM cross-entropy over the answer tokens ([SEG] positions masked by the
labels), summed over the batch and divided by its loss tokens, + the mask terms (BCE, Dice, IoU, object score)
averaged over every supervised (expression, frame) of the batch, with VIRST's weights.

The rows are processed with `jax.vmap` (one video each: the model's forward is per video); every video has the
same VLM grid (the pipeline's fixed `vlm_size`), so one host-built `VisionInputs` layout (`vision_template`)
serves all rows, its pixel rows replaced per video.

    template = vision_template(model_config.llm, grid_thw)
    loss, metrics = batch_loss(model, batch, template, VirstLossConfig())

batch (B leading; `virst_data.RvosSource.next_batch` + `dropout_key`):
    input_ids, attention_mask, labels (B, L) int32; position_ids (B, 3, L) int32
    pixel_values_videos (B, N, D) float32; sam2_pixel_values (B, T, 3, S, S) float32; masks (B, T, S, S) bool
    dropout_key (B, 2) uint32 (the SegPrompter's dropout; VIRST trains with dropout 0.1)
    anchor_frames (B, A) int32, optional: each row's anchors (`tdau.train_anchor_frames`), traced
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.inputs import ModelInputs
from stvl_jax.models.qwen_vl.vision_inputs import VisionInputs, prepare_vision_inputs
from stvl_jax.nn.lora import LoRAKey
from stvl_jax.train.losses import lm_loss
from stvl_jax.train.virst_loss import VirstLossConfig, mask_losses, virst_loss

MASK_TERMS = ("bce", "dice", "iou", "occ")


def vision_template(llm_config, grid_thw: np.ndarray) -> VisionInputs:
    """The packed vision layout of ONE video of grid (1, 3) (t, h, w) patches, pixel rows zero."""
    grid = np.asarray(grid_thw, np.int64).reshape(1, 3)
    rows = np.zeros((int(grid.prod()), llm_config.vision.patch_dim), np.float32)
    return prepare_vision_inputs(llm_config, pixel_values_videos=rows, video_grid_thw=grid)


def forward_anchors(seg_frames: int, rule: str) -> tuple[int, ...] | None:
    """The training forward's static anchors for the `data.anchors` rule: "all" = every SAM2 frame (VIRST's default
    training: its keyframes are all conditioning frames); "random" / "uniform" = None (the batch's per-row
    `anchor_frames` when it has them, else the evaluation rule `tdau.anchor_frames_for`)."""
    if rule not in ("random", "uniform", "all"):
        raise InputError(f"training anchor rule {rule!r}: expected 'random', 'uniform' or 'all'")
    return tuple(range(seg_frames)) if rule == "all" else None


def batch_loss(model, batch: dict, template: VisionInputs, loss_cfg: VirstLossConfig, rule: str = "random"):
    """-> (loss, metrics {"ce", "bce", "dice", "iou", "occ", "loss", "frames", "lm_tokens"}). Traceable.
    rule: the `data.anchors` rule (`forward_anchors`)."""

    template = jax.tree.map(jnp.asarray, template)  # host arrays -> constants of the traced program
    every_frame = forward_anchors(batch["sam2_pixel_values"].shape[1], rule)

    def one(model, pv, ids, mask, pos, labels, sam2_pix, masks, key, anchors=None):
        vision = dataclasses.replace(template, pixel_values=pv.astype(jnp.float32))
        inputs = ModelInputs(ids[None], mask[None], pos[:, None], vision)
        out = model.forward(inputs, sam2_pix, track=True, multimask=False, dropout_rng=key,
                            anchor_frames=every_frame if anchors is None else anchors)
        lm = lm_loss(out.logits, {"labels": labels[None]}, None)
        tr = out.tracking
        supervised = jnp.ones(masks.shape[:1], bool)[None]  # every segmentation frame has its ground truth
        parts = mask_losses(tr.low_res_logits, tr.iou, tr.object_score_logits, masks[None].astype(jnp.float32),
                            supervised, loss_cfg)
        return lm.total, lm.tokens, parts

    # the rows' own anchors (VIRST's random training anchors) when the batch has them, else the evaluation rule
    anchors = (batch["anchor_frames"],) if "anchor_frames" in batch else ()
    rows = (batch["pixel_values_videos"], batch["input_ids"], batch["attention_mask"], batch["position_ids"],
            batch["labels"], batch["sam2_pixel_values"], batch["masks"], batch["dropout_key"], *anchors)
    if isinstance(model, nnx.Module) and nnx.state(model, LoRAKey):
        # per-row adapter dropout keys (`set_dropout_keys(rows=True)`): split them over the rows, share the rest
        axes = nnx.StateAxes({LoRAKey: 0, ...: None})
        totals, tokens, parts = nnx.vmap(one, in_axes=(axes, *(0,) * len(rows)))(model, *rows)
    else:
        totals, tokens, parts = jax.vmap(functools.partial(one, model))(*rows)
    n_tok = jnp.sum(tokens)
    ce = jnp.sum(totals) / jnp.maximum(n_tok, 1.0)
    count = jnp.sum(parts["count"])
    # per-row means back to sums, then one mean over every supervised frame of the batch
    merged = {k: jnp.sum(parts[k] * parts["count"]) / (count + 1e-8) for k in MASK_TERMS}
    loss, metrics = virst_loss(ce, merged, loss_cfg)
    return loss, {**metrics, "frames": count, "lm_tokens": n_tok}
