"""VIRST's loss: hand-computed values, and upstream's formulas (AIDASLab/VIRST model/VIRST.py `dice_loss`,
`sigmoid_ce_loss` and the per-frame loop of `VirstForCausalLM.forward`) re-typed in torch below from upstream's
math as an independent reference (written for this test, not derived from our code)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stvl_jax.train.virst_loss import VirstLossConfig, mask_losses, virst_loss


def _softplus(x):
    return math.log1p(math.exp(x))


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_hand_computed_values():
    # frame 0: logits 0 everywhere, gt one pixel, predicted IoU 0.3, object logit 0
    # frame 1: one confident pixel (+4) on an empty gt, predicted IoU 0.9, object logit -2
    logits = np.array([[[[0, 0], [0, 0]], [[4, -4], [-4, -4]]]], np.float32)  # (1, 2, 2, 2)
    gt = np.array([[[[1, 0], [0, 0]], [[0, 0], [0, 0]]]], np.float32)
    iou, obj = np.array([[0.3, 0.9]], np.float32), np.array([[0.0, -2.0]], np.float32)
    bce = [math.log(2), (_softplus(4) + 3 * _softplus(-4)) / 4]
    # dice with scale 1000, eps 1e-6: frame 0 2 * 0.5 / 1000 over (4 * 0.5 + 1) / 1000; frame 1 numerator 0
    dice = [1 - (2 * 0.5 / 1000 + 1e-6) / (2.0 / 1000 + 1 / 1000 + 1e-6),
            1 - 1e-6 / ((_sig(4) + 3 * _sig(-4)) / 1000 + 1e-6)]
    assert dice[0] == pytest.approx(0.6664445, abs=1e-7) and dice[1] == pytest.approx(0.9990357, abs=1e-7)
    # sigmoid(0) = 0.5 is not > 0.5: frame 0 predicts nothing -> IoU 0; frame 1: 0 / (1 + 1e-6) = 0
    iou_l = [0.3, 0.9]
    occ = [math.log(2), _softplus(-2)]  # targets: present, absent
    cfg = VirstLossConfig()
    parts = mask_losses(jnp.asarray(logits), jnp.asarray(iou), jnp.asarray(obj), jnp.asarray(gt),
                        jnp.ones((1, 2), bool), cfg)
    for name, values in (("bce", bce), ("dice", dice), ("iou", iou_l), ("occ", occ)):
        assert float(parts[name]) == pytest.approx(sum(values) / 2, abs=1e-6), name
    assert float(parts["count"]) == 2
    total, metrics = virst_loss(jnp.float32(1.5), parts, cfg)
    want = 1.5 + 2 * sum(bce) / 2 + 0.5 * sum(dice) / 2 + 2 * 0.05 * sum(iou_l) / 2 + 0.05 * sum(occ) / 2
    assert float(total) == pytest.approx(want, abs=1e-5) and float(metrics["loss"]) == float(total)
    once, _ = virst_loss(jnp.float32(1.5), parts, cfg.replace(iou_counted_twice=False))
    assert float(once) == pytest.approx(want - 0.05 * sum(iou_l) / 2, abs=1e-5)
    # only frame 0 supervised: the averages are frame 0's
    only0 = mask_losses(jnp.asarray(logits), jnp.asarray(iou), jnp.asarray(obj), jnp.asarray(gt),
                        jnp.asarray([[True, False]]), cfg)
    assert float(only0["dice"]) == pytest.approx(dice[0], abs=1e-6) and float(only0["count"]) == 1


def test_matches_upstreams_formulas_in_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    # --- upstream's math, re-typed (model/VIRST.py) ---
    def dice_loss(inputs, targets, num_masks, scale=1000, eps=1e-6):
        inputs = inputs.sigmoid().flatten(1, 2)
        targets = targets.flatten(1, 2)
        numerator = 2 * (inputs / scale * targets).sum(-1)
        denominator = (inputs / scale).sum(-1) + (targets / scale).sum(-1)
        return (1 - (numerator + eps) / (denominator + eps)).sum() / (num_masks + 1e-8)

    def sigmoid_ce_loss(inputs, targets, num_masks):
        loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        return loss.flatten(1, 2).mean(1).sum() / (num_masks + 1e-8)

    rng = np.random.default_rng(0)
    n, t, h, size = 2, 3, 8, 32
    low = rng.normal(scale=3, size=(n, t, h, h)).astype(np.float32)
    low[1, 2] = -1024.0  # a frame predicted absent (NO_OBJ_SCORE)
    gt = (rng.random((n, t, size, size)) > 0.7).astype(np.float32)
    gt[0, 1] = 0  # an empty ground truth
    iou = rng.random((n, t)).astype(np.float32)
    obj = rng.normal(size=(n, t)).astype(np.float32)

    sums = dict(bce=0.0, dice=0.0, iou=0.0, occ=0.0)
    count = 0
    for o in range(n):
        for f in range(t):
            pred_logits = F.interpolate(torch.from_numpy(low[o, f])[None, None], size=(size, size), mode="bilinear",
                                        align_corners=False)[0, 0]  # pred_masks_high_res
            gt_mask = torch.from_numpy(gt[o, f])[None]
            sums["bce"] += float(sigmoid_ce_loss(pred_logits.unsqueeze(0), gt_mask, num_masks=1))
            sums["dice"] += float(dice_loss(pred_logits.unsqueeze(0), gt_mask, num_masks=1))
            pred_bin = (pred_logits.sigmoid() > 0.5).float()
            gt_bin = (gt_mask.squeeze(0) > 0.5).float()
            inter = (pred_bin * gt_bin).sum()
            union = pred_bin.sum() + gt_bin.sum() - inter
            real_iou = (inter / (union + 1e-6)).item()
            sums["iou"] += float(torch.abs(real_iou - torch.tensor(iou[o, f])))
            gt_occ = torch.tensor(float(gt_mask.sum() > 0))
            sums["occ"] += float(F.binary_cross_entropy_with_logits(torch.tensor(obj[o, f]), gt_occ))
            count += 1
    parts = mask_losses(jnp.asarray(low), jnp.asarray(iou), jnp.asarray(obj), jnp.asarray(gt), jnp.ones((n, t)),
                        VirstLossConfig())
    for k, v in sums.items():
        assert float(parts[k]) == pytest.approx(v / (count + 1e-8), rel=1e-5, abs=1e-6), k


def test_gradients_are_finite_and_the_real_iou_is_a_constant():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(1, 2, 4, 4)), jnp.float32).at[0, 1].set(-1024.0)
    gt = jnp.zeros((1, 2, 8, 8)).at[0, 0, :4, :4].set(1.0)
    iou, obj = jnp.asarray([[0.2, 0.7]]), jnp.asarray([[30.0, -30.0]])  # saturated object scores too

    def f(lg, io, ob):
        return virst_loss(0.0, mask_losses(lg, io, ob, gt, jnp.ones((1, 2)), VirstLossConfig()),
                          VirstLossConfig())[0]

    g_logits, g_iou, g_obj = jax.grad(f, argnums=(0, 1, 2))(logits, iou, obj)
    assert all(np.isfinite(np.asarray(g)).all() for g in (g_logits, g_iou, g_obj))
    assert np.abs(np.asarray(g_logits[0, 0])).sum() > 0
    # d/d iou_pred of 2 * 0.05 * mean |real - pred| = 0.1 * sign(pred - real) / 2; frame 1 real IoU = 0
    assert float(g_iou[0, 1]) == pytest.approx(0.05, abs=1e-7)


def test_default_weights_are_virsts():  # utils/argument.py of AIDASLab/VIRST; Dice scale and eps of its dice_loss
    from stvl_jax.train.virst_loss import VirstLossConfig

    c = VirstLossConfig()
    assert (c.ce_weight, c.bce_weight, c.dice_weight, c.iou_weight, c.occ_weight) == (1, 2, 0.5, 0.05, 0.05)
    assert (c.dice_scale, c.dice_eps, c.iou_counted_twice) == (1000, 1e-6, True)
