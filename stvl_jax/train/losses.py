"""Training losses over (B, L, V) logits, HF's next-token convention: logits[:, t] predict labels[:, t + 1].

A loss returns sums, not means — `LossOutput(total, tokens, metrics)` — so gradient accumulation and
data-parallel reduction stay exact: the trainer divides the accumulated `total` by the accumulated `tokens`
(the number of loss tokens in the whole optimizer batch, HF's `num_items_in_batch`).

Loss tokens: positions whose (shifted) label is not -100 and whose `loss_weights` entry is non-zero; each
token's loss is multiplied by its weight.

- `lm`: cross-entropy on assistant tokens (the pipeline puts -100 elsewhere).
- `streamo_focal` (Streamo's `stream_focal_loss`): per-token CE; where the label is one of
  the three state tokens the token loss is multiplied by alpha_c * (1 - p_t)^gamma with
  alpha_c = (state tokens in the batch / state tokens of class c) / classes present; other tokens weight 1.
  `alpha_scope="batch"` counts over the micro-batch, `"sequence"` per row (ms-swift ran batch size 1 per
  device, where the two agree); `"none"`: alpha_c = 1.

Register a custom loss with `@register_loss("name")` and select it with `loss.kind=name`; it receives the
logits, every non-model batch field (`targets`: labels, loss_weights, ... as (B, L) arrays) and the
`LossConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from stvl_jax.errors import ConfigError
from stvl_jax.train.config import LossConfig

IGNORE = -100


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossOutput:
    total: jax.Array  # () float32: sum of weighted token losses
    tokens: jax.Array  # () float32: number of loss tokens
    metrics: dict = dataclasses.field(default_factory=dict)  # extra () sums, reduced like `total`


@dataclasses.dataclass(frozen=True)
class ForwardOutput:
    """What a loss sees of the forward pass: final hidden states and lazy projections onto the vocabulary
    (full logits only when a loss asks for them)."""

    hidden: jax.Array  # (B, L, D)
    logits_fn: Callable[[jax.Array], jax.Array]  # hidden -> (B, L, V)
    token_logits_fn: Callable[[jax.Array, Any], jax.Array]  # (hidden, ids) -> (B, L, len(ids))

    def logits(self) -> jax.Array:
        return self.logits_fn(self.hidden)

    def token_logits(self, token_ids) -> jax.Array:
        return self.token_logits_fn(self.hidden, token_ids)


def logits_of(out: "ForwardOutput | jax.Array") -> jax.Array:
    """Full (B, L, V) logits of a forward output (losses also accept plain logits, e.g. in tests)."""
    return out.logits() if isinstance(out, ForwardOutput) else out


LossFn = Callable[["ForwardOutput | jax.Array", Mapping[str, jax.Array], LossConfig], LossOutput]
LOSSES: dict[str, LossFn] = {}
# one module per model family, imported when selected
LOSS_MODULES = {"stride_activation": "stvl_jax.train.stride_loss"}


def register_loss(name: str):
    def deco(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        return fn

    return deco


def get_loss(cfg: LossConfig) -> LossFn:
    if cfg.kind not in LOSSES and cfg.kind in LOSS_MODULES:
        import importlib

        importlib.import_module(LOSS_MODULES[cfg.kind])
    if cfg.kind not in LOSSES:
        raise ConfigError(f"loss.kind {cfg.kind!r} is not a registered loss; known: {sorted(LOSSES)}")
    if cfg.kind == "streamo_focal" and len(cfg.focal.state_token_ids) == 0:
        raise ConfigError("loss.kind=streamo_focal needs loss.focal.state_token_ids (the three state-token ids)")
    return LOSSES[cfg.kind]


def shifted_token_ce(logits: jax.Array, targets: Mapping[str, jax.Array]):
    """-> (ce (B, L-1) float32, p_t (B, L-1), labels (B, L-1), weights (B, L-1) with 0 off loss tokens)."""
    labels = targets["labels"][:, 1:]
    weights = targets.get("loss_weights")
    weights = jnp.ones(labels.shape, jnp.float32) if weights is None else weights[:, 1:].astype(jnp.float32)
    valid = (labels != IGNORE) & (weights != 0)
    logits = logits[:, :-1].astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    ce = jnp.where(valid, logz - target, 0.0)
    return ce, jnp.exp(-ce), labels, jnp.where(valid, weights, 0.0)


@register_loss("lm")
def lm_loss(out, targets: Mapping[str, jax.Array], cfg: LossConfig) -> LossOutput:
    ce, _, _, w = shifted_token_ce(logits_of(out), targets)
    return LossOutput(total=jnp.sum(ce * w), tokens=jnp.sum(w != 0).astype(jnp.float32))


def focal_alpha(is_class: jax.Array, scope: str) -> jax.Array:
    """is_class: (B, T, C) bool, loss token i has state class c. -> alpha (B, T, C) for the formula above
    (scope "none": 1, the focal term without class weights)."""
    if scope == "none":
        return jnp.ones(is_class.shape, jnp.float32)
    axes = (0, 1) if scope == "batch" else (1,)
    count = jnp.sum(is_class, axis=axes, keepdims=True).astype(jnp.float32)  # (1|B, 1, C)
    total = jnp.sum(count, axis=-1, keepdims=True)
    present = jnp.sum(count > 0, axis=-1, keepdims=True).astype(jnp.float32)
    alpha = (total / jnp.maximum(count, 1.0)) / jnp.maximum(present, 1.0)
    return jnp.broadcast_to(alpha, is_class.shape)


@register_loss("streamo_focal")
def streamo_focal_loss(out, targets: Mapping[str, jax.Array], cfg: LossConfig) -> LossOutput:
    ce, p_t, labels, w = shifted_token_ce(logits_of(out), targets)
    state_ids = jnp.asarray(cfg.focal.state_token_ids, jnp.int32)
    is_class = (labels[..., None] == state_ids) & (w != 0)[..., None]  # (B, T, C)
    alpha = jnp.sum(jnp.where(is_class, focal_alpha(is_class, cfg.focal.alpha_scope), 0.0), axis=-1)
    is_state = jnp.any(is_class, axis=-1)
    factor = jnp.where(is_state, alpha * (1.0 - p_t) ** cfg.focal.gamma, 1.0)
    state_tokens = jnp.sum(is_state).astype(jnp.float32)
    return LossOutput(total=jnp.sum(ce * w * factor), tokens=jnp.sum(w != 0).astype(jnp.float32),
                      metrics={"state_ce_sum": jnp.sum(jnp.where(is_state, ce, 0.0)), "state_tokens": state_tokens})
