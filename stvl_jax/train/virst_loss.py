"""VIRST's training loss (AIDASLab/VIRST `model/VIRST.py` `VirstForCausalLM.forward`), in JAX.

Per supervised (object, frame) of the SAM2 tracking output, with the mask logits bilinearly upsampled to the
ground truth's size (VIRST uses `pred_masks_high_res`, the low-res logits upsampled to the SAM2 input size):

    bce   sigmoid cross-entropy, mean over pixels
    dice  1 - (2 sum(p/s * g) + eps) / (sum(p/s) + sum(g/s) + eps), p = sigmoid(logits), s = 1000, eps = 1e-6
    iou   |IoU(sigmoid(logits) > 0.5, g > 0.5) - predicted IoU| (L1; the real IoU is a constant, `.item()`
          upstream; intersection / (union + 1e-6), so 0 when both masks are empty)
    occ   sigmoid cross-entropy of the object-score logit against "the ground truth is not empty"

Each term is summed over the supervised (object, frame) pairs and divided by their count (+ 1e-8): frames whose
ground truth is empty count like the others (dice ~1 unless the prediction is empty, IoU target 0, occ target 0).
Total, as upstream writes it: ce_weight * CE + bce_weight * bce + dice_weight * dice + iou_weight * iou
(VIRST's `mask_loss`) + iou_weight * iou (added a second time) + occ_weight * occ; `iou_counted_twice=False`
drops the repeat. CE is the language-model loss over the answer tokens with the [SEG] positions masked (the
caller's, e.g. `losses.lm_loss` total / tokens).

    parts = mask_losses(out.low_res_logits, out.iou, out.object_score_logits, gt, supervised, cfg)
    loss, metrics = virst_loss(ce, parts, cfg)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from stvl_jax.config_base import StrictConfig


class VirstLossConfig(StrictConfig):
    """VIRST's defaults (utils/argument.py; its evaluation script passes bce = dice = 1)."""

    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    iou_weight: float = 0.05
    occ_weight: float = 0.05
    dice_scale: float = 1000.0
    dice_eps: float = 1e-6
    iou_counted_twice: bool = True  # upstream adds the weighted IoU term twice (effective weight 2 * iou_weight)


def _bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    # optax's log-sigmoid form: finite gradients at saturated logits (NO_OBJ_SCORE = -1024 frames), where
    # sam2_loss.sigmoid_focal with gamma 0 differentiates (1 - p_t) ** 0 into 0 * inf = nan
    return optax.sigmoid_binary_cross_entropy(logits, targets)


def scaled_dice(logits: jax.Array, targets: jax.Array, scale: float, eps: float) -> jax.Array:
    """(..., P) logits and 0/1 targets -> (...) VIRST's dice loss (sums divided by `scale` before the ratio)."""
    p = jax.nn.sigmoid(logits)
    numerator = 2 * jnp.sum(p / scale * targets, axis=-1)
    denominator = jnp.sum(p / scale, axis=-1) + jnp.sum(targets / scale, axis=-1)
    return 1 - (numerator + eps) / (denominator + eps)


def mask_losses(mask_logits: jax.Array, iou_pred: jax.Array, score_logits: jax.Array, gt: jax.Array,
                supervised: jax.Array, cfg: VirstLossConfig) -> dict[str, jax.Array]:
    """mask_logits (N, T, h, w) (`TdauOutput.low_res_logits`), iou_pred (N, T), score_logits (N, T), gt
    (N, T, H, W) 0/1 at the SAM2 input size, supervised (N, T) bool. -> {"bce", "dice", "iou", "occ"} each
    averaged over the supervised pairs, and "count"."""
    n, t, h, w = gt.shape
    logits = mask_logits.astype(jnp.float32)
    if logits.shape[-2:] != (h, w):  # torch bilinear, align_corners=False (half-pixel centres, no antialias)
        logits = jax.image.resize(logits, (*logits.shape[:2], h, w), method="bilinear", antialias=False)
    logits, g = logits.reshape(n, t, h * w), gt.reshape(n, t, h * w).astype(jnp.float32)
    bce = jnp.mean(_bce(logits, g), axis=-1)
    dice = scaled_dice(logits, g, cfg.dice_scale, cfg.dice_eps)
    pred_bin = (jax.nn.sigmoid(logits) > 0.5).astype(jnp.float32)
    gt_bin = (g > 0.5).astype(jnp.float32)
    inter = jnp.sum(pred_bin * gt_bin, axis=-1)
    union = jnp.sum(pred_bin, axis=-1) + jnp.sum(gt_bin, axis=-1) - inter
    real_iou = jax.lax.stop_gradient(inter / (union + 1e-6))
    iou = jnp.abs(real_iou - iou_pred.astype(jnp.float32))
    present = (jnp.sum(g, axis=-1) > 0).astype(jnp.float32)
    occ = _bce(score_logits.astype(jnp.float32), present)
    sup = supervised.astype(jnp.float32)
    count = jnp.sum(sup)
    out = {k: jnp.sum(v * sup) / (count + 1e-8) for k, v in (("bce", bce), ("dice", dice), ("iou", iou),
                                                               ("occ", occ))}
    out["count"] = count
    return out


def virst_loss(ce: jax.Array, parts: dict[str, jax.Array], cfg: VirstLossConfig) -> tuple[jax.Array,
                                                                                          dict[str, jax.Array]]:
    """ce: the LM cross-entropy (scalar); parts: `mask_losses`. -> (total, {"ce", "bce", "dice", "iou", "occ",
    "loss"} unweighted terms and the total)."""
    iou_w = cfg.iou_weight * (2 if cfg.iou_counted_twice else 1)
    total = (cfg.ce_weight * ce + cfg.bce_weight * parts["bce"] + cfg.dice_weight * parts["dice"]
             + iou_w * parts["iou"] + cfg.occ_weight * parts["occ"])
    metrics = {"ce": jnp.asarray(ce, jnp.float32), **{k: parts[k] for k in ("bce", "dice", "iou", "occ")},
               "loss": total}
    return total, metrics
