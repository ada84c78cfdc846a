"""Losses against straightforward float64 numpy references written from the definitions (per-position loops)."""

from collections import Counter

import jax.numpy as jnp
import numpy as np
import pytest

from stvl_jax.errors import ConfigError
from stvl_jax.train.config import LossConfig
from stvl_jax.train.losses import get_loss, lm_loss, streamo_focal_loss

STATE = (2, 5, 7)


def _items(logits, labels, weights):
    """Loss positions: (row, label, weight, ce, p_t) for logits[b, t] predicting labels[b, t + 1]."""
    out = []
    B, L, _ = logits.shape
    for b in range(B):
        for t in range(L - 1):
            y, w = int(labels[b, t + 1]), float(weights[b, t + 1])
            if y == -100 or w == 0:
                continue
            z = logits[b, t].astype(np.float64)
            lse = z.max() + np.log(np.exp(z - z.max()).sum())
            ce = lse - z[y]
            out.append((b, y, w, ce, np.exp(-ce)))
    return out


def ref_lm(logits, labels, weights):
    items = _items(logits, labels, weights)
    return sum(w * ce for _, _, w, ce, _ in items) / len(items)


def ref_focal(logits, labels, weights, gamma, scope):
    items = _items(logits, labels, weights)
    total = 0.0
    for b, y, w, ce, p in items:
        if y in STATE:
            counts = Counter(yy for bb, yy, *_ in items if yy in STATE and (scope == "batch" or bb == b))
            alpha = 1.0 if scope == "none" else (sum(counts.values()) / counts[y]) / len(counts)
            total += w * alpha * (1 - p) ** gamma * ce
        else:
            total += w * ce
    return total / len(items)


def _case(seed=0, B=3, L=9, V=11):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (B, L, V)).astype(np.float32)
    labels = rng.integers(0, V, (B, L))
    labels[rng.random((B, L)) < 0.3] = -100
    labels[:, ::3] = rng.choice(STATE, (B, len(labels[0, ::3])))  # plenty of state tokens, unbalanced
    labels[0, 4] = 2
    weights = rng.choice([0.0, 0.5, 1.0, 2.0], (B, L), p=[0.1, 0.2, 0.5, 0.2]).astype(np.float32)
    return logits, labels.astype(np.int32), weights


def _mean(out):
    return float(out.total / out.tokens)


def test_lm_loss_matches_reference():
    logits, labels, weights = _case()
    out = lm_loss(jnp.asarray(logits), {"labels": labels, "loss_weights": weights}, LossConfig())
    np.testing.assert_allclose(_mean(out), ref_lm(logits, labels, weights), rtol=1e-6)
    assert float(out.tokens) == len(_items(logits, labels, weights))


def test_lm_loss_without_weights_is_plain_masked_ce():
    logits, labels, _ = _case(1)
    ones = np.ones(labels.shape, np.float32)
    out = lm_loss(jnp.asarray(logits), {"labels": labels}, LossConfig())
    np.testing.assert_allclose(_mean(out), ref_lm(logits, labels, ones), rtol=1e-6)


def test_lm_loss_uses_next_token_shift():
    # a logit spike at position t for token y only helps when labels[t + 1] == y
    logits = np.zeros((1, 3, 4), np.float32)
    logits[0, 0, 3] = 20.0
    labels = np.array([[-100, 3, -100]], np.int32)
    out = lm_loss(jnp.asarray(logits), {"labels": labels}, LossConfig())
    assert _mean(out) < 1e-6
    shifted = lm_loss(jnp.asarray(logits), {"labels": np.array([[3, -100, -100]], np.int32)}, LossConfig())
    assert float(shifted.tokens) == 0  # the first label is never predicted


@pytest.mark.parametrize("scope", ["batch", "sequence", "none"])
@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.5])
def test_focal_loss_matches_reference(scope, gamma):
    logits, labels, weights = _case(2)
    cfg = LossConfig.from_dict({"kind": "streamo_focal",
                                "focal": {"gamma": gamma, "state_token_ids": STATE, "alpha_scope": scope}})
    out = streamo_focal_loss(jnp.asarray(logits), {"labels": labels, "loss_weights": weights}, cfg)
    np.testing.assert_allclose(_mean(out), ref_focal(logits, labels, weights, gamma, scope), rtol=1e-6)


def test_focal_loss_with_absent_class_and_no_state_tokens():
    logits, labels, weights = _case(3)
    labels[labels == 7] = 1  # class 7 absent: n_classes_present = 2
    cfg = LossConfig.from_dict({"kind": "streamo_focal", "focal": {"state_token_ids": STATE}})
    out = streamo_focal_loss(jnp.asarray(logits), {"labels": labels, "loss_weights": weights}, cfg)
    np.testing.assert_allclose(_mean(out), ref_focal(logits, labels, weights, 2.0, "batch"), rtol=1e-6)
    for s in STATE:
        labels[labels == s] = 0
    out = streamo_focal_loss(jnp.asarray(logits), {"labels": labels, "loss_weights": weights}, cfg)
    np.testing.assert_allclose(_mean(out), ref_lm(logits, labels, weights), rtol=1e-6)  # text only: plain CE


def test_focal_loss_balances_classes():
    # one frequent and one rare state class with equal CE: alpha makes both classes contribute equally
    logits = np.zeros((1, 5, 8), np.float32)
    labels = np.array([[-100, 2, 2, 2, 5]], np.int32)
    cfg = LossConfig.from_dict({"kind": "streamo_focal", "focal": {"state_token_ids": STATE, "gamma": 0.0}})
    out = streamo_focal_loss(jnp.asarray(logits), {"labels": labels}, cfg)
    ce = np.log(8.0)
    # alpha_2 = (4/3)/2, alpha_5 = (4/1)/2: 3 * (2/3) * ce + 1 * 2 * ce over 4 tokens
    np.testing.assert_allclose(_mean(out), (3 * (2 / 3) + 2) * ce / 4, rtol=1e-6)


def test_sums_make_accumulation_exact():
    logits, labels, weights = _case(4, B=4)
    full = lm_loss(jnp.asarray(logits), {"labels": labels, "loss_weights": weights}, LossConfig())
    parts = [lm_loss(jnp.asarray(logits[i:i + 2]), {"labels": labels[i:i + 2], "loss_weights": weights[i:i + 2]},
                     LossConfig()) for i in (0, 2)]
    np.testing.assert_allclose(sum(float(p.total) for p in parts) / sum(float(p.tokens) for p in parts),
                               _mean(full), rtol=1e-6)


def test_unknown_loss_and_missing_state_ids_are_config_errors():
    with pytest.raises(ConfigError, match="not a registered loss"):
        get_loss(LossConfig(kind="nope"))
    with pytest.raises(ConfigError, match="state_token_ids"):
        get_loss(LossConfig(kind="streamo_focal"))
