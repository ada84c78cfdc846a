"""SAM2's training loss on hand-computed cases (the comparison with Meta's own loss_fns.py on random inputs is
research/probes/sam2_loss_vs_meta.py: it needs their repository, which is not a dependency)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from stvl_jax.train.sam2_loss import Sam2LossConfig, sam2_losses

LOG2 = math.log(2.0)


def test_one_output_all_zero_logits():
    # 2 pixels, GT [1, 0], logits 0: p = 0.5 everywhere
    # focal: target 1 -> 0.25 * 0.25 * log2; target 0 -> 0.75 * 0.25 * log2; mean over the 2 pixels
    # dice: |X| + |Y| = 1 + 1, |X - Y|_1 = 1 -> 1 - (1 + 1) / (2 + 1) = 1/3
    # iou: nothing above 0 -> IoU 0, predicted 0.5 -> L1 0.5; class: BCE(0, 1) = log 2
    out = sam2_losses(jnp.zeros((1, 1, 1, 1, 2)), jnp.full((1, 1, 1), 0.5), jnp.zeros((1, 1, 1)),
                      jnp.array([[[1.0, 0.0]]]), Sam2LossConfig())
    focal = (0.0625 * LOG2 + 0.1875 * LOG2) / 2
    assert float(out["loss_mask"]) == pytest.approx(focal, rel=1e-6)
    assert float(out["loss_dice"]) == pytest.approx(1 / 3, rel=1e-6)
    assert float(out["loss_iou"]) == pytest.approx(0.5, rel=1e-6)
    assert float(out["loss_class"]) == pytest.approx(LOG2, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(20 * focal + 1 / 3 + 0.5 + LOG2, rel=1e-6)


def test_multimask_backpropagates_the_best_output_and_all_ious():
    # output 0 is right (logits +-20), output 1 is 0 everywhere; IoU predictions 1 and 1
    logits = jnp.array([[[[[20.0, -20.0]], [[0.0, 0.0]]]]])  # (S=1, N=1, M=2, H=1, W=2)
    out = sam2_losses(logits, jnp.array([[[1.0, 1.0]]]), jnp.array([[[5.0]]]), jnp.array([[[1.0, 0.0]]]),
                      Sam2LossConfig())
    assert float(out["loss_mask"]) < 1e-12 and float(out["loss_dice"]) < 1e-8  # the right output was chosen
    assert float(out["loss_iou"]) == pytest.approx(0.5)  # actual IoUs 1 and 0: mean(|1-1|, |1-0|)
    chosen = sam2_losses(logits, jnp.array([[[1.0, 1.0]]]), jnp.array([[[5.0]]]), jnp.array([[[1.0, 0.0]]]),
                         Sam2LossConfig(supervise_all_iou=False, iou_use_l1_loss=False))
    assert float(chosen["loss_iou"]) == pytest.approx(0.0, abs=1e-12)


def test_absent_object_only_trains_the_object_score():
    out = sam2_losses(jnp.ones((2, 1, 3, 2, 2)), jnp.ones((2, 1, 3)), jnp.full((2, 1, 1), 2.0),
                      jnp.zeros((1, 2, 2)), Sam2LossConfig())
    assert float(out["loss_mask"]) == float(out["loss_dice"]) == float(out["loss_iou"]) == 0.0
    # two steps of BCE(logit 2, target 0) = log(1 + e^2)
    assert float(out["loss_class"]) == pytest.approx(2 * math.log1p(math.exp(2.0)), rel=1e-6)


def test_terms_are_divided_by_the_number_of_objects():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(1, 1, 3, 4, 4)), jnp.float32)
    gt = jnp.asarray(rng.random((1, 4, 4)) > 0.5, jnp.float32)
    one = sam2_losses(logits, jnp.full((1, 1, 3), 0.3), jnp.ones((1, 1, 1)), gt, Sam2LossConfig())
    two = sam2_losses(jnp.concatenate([logits] * 2, 1), jnp.full((1, 2, 3), 0.3), jnp.ones((1, 2, 1)),
                      jnp.concatenate([gt] * 2, 0), Sam2LossConfig())
    for k in ("loss_mask", "loss_dice", "loss_iou", "loss_class", "loss"):
        assert float(two[k]) == pytest.approx(float(one[k]), rel=1e-6)  # the same object twice: the same mean


def test_focal_gamma_zero_has_finite_gradients_at_saturated_logits():
    """SAM2's object-score loss uses gamma 0: it is plain BCE, whose gradient is sigmoid(x) - t (by hand), also
    where sigmoid saturates to exactly 0 or 1 in fp32 ((1 - p_t) ** 0 differentiated there is 0 * inf)."""
    import jax
    import jax.numpy as jnp

    from stvl_jax.train.sam2_loss import sigmoid_focal

    x = jnp.asarray([40.0, -40.0, 40.0, 0.0])
    t = jnp.asarray([1.0, 0.0, 0.0, 1.0])
    g = jax.grad(lambda v: sigmoid_focal(v, t, -1.0, 0.0).sum())(x)
    np.testing.assert_allclose(np.asarray(g), [0.0, 0.0, 1.0, -0.5], atol=1e-7)
