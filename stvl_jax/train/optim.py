"""AdamW with warmup + cosine/linear/constant decay, global-norm clipping and per-group lr / weight decay.

The optimizer sees only the trainable parameters (a flat {path: array} dict), so frozen groups have no
optimizer state at all. Steps count optimizer updates (one update per `grad_accum_steps` micro-batches).

    update = -lr_g(step) * (adam(clip(g)) + wd_g * w * decays(path))      for a parameter in group g

Clipping is over the global norm of all trainable gradients (one norm, as torch's clip_grad_norm_).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import optax

from stvl_jax.train.config import GroupConfig, OptimConfig
from stvl_jax.train.param_groups import decays, group_of

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def make_schedule(peak: float, total_steps: int, warmup_steps: int, kind: str, min_lr_ratio: float) -> Schedule:
    """lr(step): linear 0 -> peak over `warmup_steps`, then `kind` decay to `min_lr_ratio * peak` at
    `total_steps` (HF's convention: lr(0) = 0 when there is warmup)."""
    warmup_steps = min(warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup_steps, 1)
    end = peak * min_lr_ratio
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=min_lr_ratio)
    elif kind == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif kind == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def _groups(cfg: OptimConfig, extra: Mapping[str, GroupConfig] | None) -> dict[str, GroupConfig]:
    """{name: GroupConfig} of the trainable groups, plus `extra` groups (e.g. LoRA adapters)."""
    return {**{name: getattr(cfg.groups, name) for name in cfg.groups.trainable()}, **(extra or {})}


def group_schedules(cfg: OptimConfig, total_steps: int, warmup_steps: int,
                    extra: Mapping[str, GroupConfig] | None = None) -> dict[str, Schedule]:
    """One lr schedule per trainable group (same shape, group peak lr)."""
    out = {}
    for name, g in _groups(cfg, extra).items():
        peak = cfg.lr if g.lr is None else g.lr
        out[name] = make_schedule(peak, total_steps, warmup_steps, cfg.schedule, cfg.min_lr_ratio)
    return out


def make_optimizer(cfg: OptimConfig, trainable_paths, total_steps: int, warmup_steps: int,
                   extra: Mapping[str, GroupConfig] | None = None) -> optax.GradientTransformation:
    """The optax transformation for a flat {path: array} trainable tree with paths `trainable_paths`
    (`extra`: settings of groups beyond `cfg.groups`, e.g. {"lora": ...})."""
    paths = sorted(trainable_paths)
    labels = {p: group_of(p) for p in paths}
    decay_mask = {p: decays(p) for p in paths}
    schedules = group_schedules(cfg, total_steps, warmup_steps, extra)
    groups = _groups(cfg, extra)
    per_group = {}
    for name, schedule in schedules.items():
        g = groups[name]
        wd = cfg.weight_decay if g.weight_decay is None else g.weight_decay
        parts = [optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)]
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
        parts.append(optax.scale_by_learning_rate(schedule))
        per_group[name] = optax.chain(*parts)
    present = set(labels.values())
    # multi_transform needs a transform for every label it sees and for no other
    per_group = {k: v for k, v in per_group.items() if k in present}
    chain = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm else []
    chain.append(optax.multi_transform(per_group, labels))
    return optax.chain(*chain)


def learning_rates(schedules: Mapping[str, Schedule], step: int) -> dict[str, float]:
    """{group: lr} at an optimizer step (for logging)."""
    return {name: float(s(step)) for name, s in schedules.items()}
