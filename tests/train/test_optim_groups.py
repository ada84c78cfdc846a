"""Parameter groups, weight-decay mask, schedules and the per-group AdamW update against hand-written formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stvl_jax.train.config import OptimConfig
from stvl_jax.train.optim import make_optimizer, make_schedule
from stvl_jax.train.param_groups import decays, group_of, split_by_groups


def _paths(family):
    from stvl_jax.models.qwen_vl.loading import param_shapes
    from stvl_jax.models.qwen_vl.presets import load_model_config

    return param_shapes(load_model_config({"qwen3_vl": "qwen3vl_tiny", "qwen2_5_vl": "qwen25vl_tiny"}[family]))


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_every_parameter_has_the_documented_group(family):
    expected = {
        "visual/patch_embed/kernel": "vision", "visual/blocks/attn/q_proj/kernel": "vision",
        "visual/merger/mlp/fc1/kernel": "merger", "visual/merger/norm/weight": "merger",
        "language_model/embed_tokens/embedding": "embed", "language_model/layers/mlp/up_proj/kernel": "llm",
        "language_model/norm/weight": "llm",
    }
    if family == "qwen3_vl":
        expected.update({"visual/pos_embed": "vision", "visual/deepstack_merger_0/mlp/fc2/bias": "merger"})
    else:
        expected["visual/blocks/mlp/gate_proj/kernel"] = "vision"
    paths = _paths(family)
    for path, group in expected.items():
        assert path in paths and group_of(path) == group, path
    groups = {group_of(p) for p in paths}  # every path has a group (group_of raises otherwise)
    assert groups == {"vision", "merger", "llm", "embed"}
    trainable, frozen = split_by_groups(paths, ["merger", "llm", "embed"])
    assert set(frozen) == {p for p in paths if p.startswith("visual/") and "merger" not in p}
    assert set(trainable) | set(frozen) == set(paths) and not set(trainable) & set(frozen)


def test_weight_decay_mask():
    assert decays("language_model/layers/mlp/up_proj/kernel")
    assert decays("language_model/embed_tokens/embedding")
    for path in ("visual/blocks/attn/q_proj/bias", "language_model/layers/input_layernorm/weight",
                 "language_model/layers/self_attn/q_norm/weight", "language_model/norm/weight",
                 "visual/merger/norm/weight", "visual/pos_embed"):
        assert not decays(path), path


def test_warmup_cosine_schedule_closed_form():
    peak, warm, total, floor = 2e-3, 4, 20, 0.1
    s = make_schedule(peak, total, warm, "cosine", floor)
    for step in range(total + 1):
        if step < warm:
            want = peak * step / warm
        else:
            frac = (step - warm) / (total - warm)
            want = peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
        np.testing.assert_allclose(float(s(step)), want, rtol=1e-6, atol=1e-12)
    lin = make_schedule(peak, total, 0, "linear", 0.0)
    np.testing.assert_allclose([float(lin(k)) for k in (0, 10, 20)], [peak, peak / 2, 0.0], atol=1e-10)
    const = make_schedule(peak, total, 2, "constant", 0.0)
    np.testing.assert_allclose([float(const(k)) for k in (0, 1, 2, 15)], [0, peak / 2, peak, peak], atol=1e-12)


def test_per_group_adamw_with_clipping_matches_hand_formula():
    """Two updates of a two-group tree: AdamW with bias correction, decoupled decay on kernels only (group
    weight decay), per-group lr, global-norm clipping over all trainable gradients."""
    cfg = OptimConfig.from_dict({
        "lr": 0.1, "schedule": "constant", "weight_decay": 0.5, "b1": 0.8, "b2": 0.9, "eps": 1e-6,
        "max_grad_norm": 1.0, "groups": {"embed": {"lr": 0.01, "weight_decay": 0.0}, "vision": {"train": False}}})
    rng = np.random.default_rng(0)
    params = {"language_model/layers/mlp/up_proj/kernel": rng.normal(size=(3, 4)).astype(np.float32),
              "language_model/norm/weight": rng.normal(size=(4,)).astype(np.float32),
              "language_model/embed_tokens/embedding": rng.normal(size=(5, 4)).astype(np.float32)}
    lr = {"language_model/layers/mlp/up_proj/kernel": 0.1, "language_model/norm/weight": 0.1,
          "language_model/embed_tokens/embedding": 0.01}
    wd = {"language_model/layers/mlp/up_proj/kernel": 0.5, "language_model/norm/weight": 0.0,
          "language_model/embed_tokens/embedding": 0.0}
    tx = make_optimizer(cfg, params, total_steps=10, warmup_steps=0)
    state = tx.init(jax.tree.map(jnp.asarray, params))
    p_ref = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p_ref.items()}
    v2 = {k: np.zeros_like(v) for k, v in p_ref.items()}
    p_jax = jax.tree.map(jnp.asarray, params)
    for t in (1, 2):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) * 3 for k, v in params.items()}
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        scale = min(1.0, 1.0 / norm)
        for k in p_ref:
            g = grads[k].astype(np.float64) * scale
            m[k] = 0.8 * m[k] + 0.2 * g
            v2[k] = 0.9 * v2[k] + 0.1 * g * g
            mhat, vhat = m[k] / (1 - 0.8 ** t), v2[k] / (1 - 0.9 ** t)
            p_ref[k] = p_ref[k] - lr[k] * (mhat / (np.sqrt(vhat) + 1e-6) + wd[k] * p_ref[k])
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, p_jax)
        p_jax = jax.tree.map(lambda p, u: p + u, p_jax, updates)
        for k in p_ref:
            np.testing.assert_allclose(np.asarray(p_jax[k]), p_ref[k], rtol=2e-5, atol=1e-6, err_msg=f"{k} t={t}")
