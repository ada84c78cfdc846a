"""SAM2's training loss (Meta's `training/loss_fns.py` `MultiStepMultiMasksAndIous`, SAM 2.1 settings), in JAX.

Per frame and correction step, over the M multimask outputs of each of N objects (logits at the GT's size):
sigmoid focal loss (mean over pixels) and dice loss per output; only the output with the smallest
`w_mask * focal + w_dice * dice` is backpropagated (SAM's rule), the IoU head regresses the IoU of its binarized
outputs with the GT (L1 or MSE; all outputs averaged with `supervise_all_iou`, else the chosen one), and the
object-score head is a focal loss (gamma 0, alpha -1: plain BCE) on "is the object in the GT". Mask, dice and IoU
terms count only where the object is present. Every term is divided by the number of objects; steps are summed.

    losses = sam2_losses(mask_logits, iou_pred, score_logits, gt, Sam2LossConfig())  # dict of scalars
    total = losses["loss"]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stvl_jax.config_base import StrictConfig


class Sam2LossConfig(StrictConfig):
    """Defaults: SAM 2.1's training configs (weights 20 / 1 / 1 / 1, L1 IoU loss over all outputs)."""
    weight_mask: float = 20.0
    weight_dice: float = 1.0
    weight_iou: float = 1.0
    weight_class: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    focal_alpha_obj_score: float = -1.0
    focal_gamma_obj_score: float = 0.0
    supervise_all_iou: bool = True
    iou_use_l1_loss: bool = True
    pred_obj_scores: bool = True


def sigmoid_focal(logits: jax.Array, targets: jax.Array, alpha: float, gamma: float) -> jax.Array:
    """Elementwise focal loss (RetinaNet); alpha < 0 switches the class weighting off."""
    p = jax.nn.sigmoid(logits)
    # BCE with logits through log-sigmoid: smooth, so its gradient is sigmoid(x) - t everywhere (also at x = 0)
    ce = -(targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))
    if gamma == 0:  # SAM2's object-score loss: (1 - p_t) ** 0 would have a NaN gradient where p_t == 1
        loss = ce
    else:
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """(..., P) logits and 0/1 targets -> (...) soft dice loss, 1 - (2|X∩Y| + 1) / (|X| + |Y| + 1)."""
    p = jax.nn.sigmoid(logits)
    denominator = p.sum(-1) + targets.sum(-1)
    numerator = denominator - jnp.abs(p - targets).sum(-1)  # = 2 sum(p * t) for binary targets
    return 1 - (numerator + 1) / (denominator + 1)


def sam2_step_losses(mask_logits: jax.Array, iou_pred: jax.Array, score_logits: jax.Array, gt: jax.Array,
                     cfg: Sam2LossConfig, num_objects: float) -> dict[str, jax.Array]:
    """One prediction step. mask_logits (N, M, H, W), iou_pred (N, M), score_logits (N, 1), gt (N, H, W) 0/1."""
    n, m = mask_logits.shape[:2]
    logits = mask_logits.reshape(n, m, -1).astype(jnp.float32)
    t = jnp.broadcast_to(gt.reshape(n, 1, -1).astype(jnp.float32), logits.shape)
    focal = sigmoid_focal(logits, t, cfg.focal_alpha, cfg.focal_gamma).mean(-1) / num_objects  # (N, M)
    dice_l = dice(logits, t) / num_objects
    pred, true = logits > 0, t > 0
    actual_iou = (pred & true).sum(-1) / jnp.maximum((pred | true).sum(-1), 1)
    diff = iou_pred.astype(jnp.float32) - actual_iou
    iou_l = (jnp.abs(diff) if cfg.iou_use_l1_loss else diff ** 2) / num_objects
    if cfg.pred_obj_scores:
        target_obj = true[:, 0].any(-1)[:, None].astype(jnp.float32)
        cls = sigmoid_focal(score_logits.astype(jnp.float32), target_obj, cfg.focal_alpha_obj_score,
                            cfg.focal_gamma_obj_score).mean(1).sum() / num_objects
    else:
        target_obj = jnp.ones((n, 1), jnp.float32)
        cls = jnp.zeros((), jnp.float32)
    if m > 1:
        best = jnp.argmin(focal * cfg.weight_mask + dice_l * cfg.weight_dice, axis=-1)[:, None]  # (N, 1)
        focal_b = jnp.take_along_axis(focal, best, -1)
        dice_b = jnp.take_along_axis(dice_l, best, -1)
        iou_b = iou_l.mean(-1, keepdims=True) if cfg.supervise_all_iou else jnp.take_along_axis(iou_l, best, -1)
    else:
        focal_b, dice_b, iou_b = focal, dice_l, iou_l
    return {"loss_mask": (focal_b * target_obj).sum(), "loss_dice": (dice_b * target_obj).sum(),
            "loss_iou": (iou_b * target_obj).sum(), "loss_class": cls}


def sam2_losses(mask_logits, iou_pred, score_logits, gt, cfg: Sam2LossConfig) -> dict[str, jax.Array]:
    """Sum over steps: mask_logits (S, N, M, H, W), iou_pred (S, N, M), score_logits (S, N, 1), gt (N, H, W).
    Returns the four terms and their weighted sum `loss`."""
    num_objects = max(float(gt.shape[0]), 1.0)
    parts = [sam2_step_losses(mask_logits[s], iou_pred[s], score_logits[s], gt, cfg, num_objects)
             for s in range(mask_logits.shape[0])]
    out = {k: sum(p[k] for p in parts) for k in parts[0]}
    out["loss"] = (cfg.weight_mask * out["loss_mask"] + cfg.weight_dice * out["loss_dice"]
                   + cfg.weight_iou * out["loss_iou"] + cfg.weight_class * out["loss_class"])
    return out
