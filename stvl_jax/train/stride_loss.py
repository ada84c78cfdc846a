"""STRIDE's training loss `stride_activation` (`loss.kind: stride_activation`,
`loss.stride.label_token_ids: [<inactive>, <active>]`).

Cross-entropy over the 2-way logits (the LM head's `<inactive>` and `<active>` columns, as
`stvl_jax.models.stride.head.activation_logits` reads them) at every position whose `activation_labels` is 0/1
(the masked slots of the second window copy, as the Grain pipeline's `format="stride"` writes them), labels
predicted in place (no shift), summed; the trainer divides by the number of masked slots of the optimizer batch
(= the reference's mean over masked slots).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from stvl_jax.errors import ConfigError
from stvl_jax.train.losses import IGNORE, ForwardOutput, LossOutput, register_loss


def _label_ids(cfg) -> tuple[int, int]:
    ids = tuple(cfg.stride.label_token_ids)
    if len(ids) != 2 or ids[0] == ids[1]:
        raise ConfigError("loss.kind=stride_activation needs loss.stride.label_token_ids: [<inactive> id, "
                          f"<active> id] (two different ids), got {list(ids)}")
    return ids


@register_loss("stride_activation")
def stride_activation_loss(out, targets: Mapping[str, jax.Array], cfg) -> LossOutput:
    """2-way CE at the masked slots (labels predicted in place). metrics: `slot_correct` (argmax hits) and
    `slot_active` (class-1 labels), summed like the loss so the logged values are fractions of masked slots."""
    ids = _label_ids(cfg)
    labels = targets.get("activation_labels")
    if labels is None:  # the trainer traces losses on a dummy batch without STRIDE fields
        labels = jnp.full(targets["labels"].shape, IGNORE, jnp.int32)
    valid = labels != IGNORE
    weights = targets.get("loss_weights")
    weights = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    weights = jnp.where(valid, weights, 0.0)
    if isinstance(out, ForwardOutput):
        logits = out.token_logits(ids).astype(jnp.float32)  # (B, L, 2)
    else:
        logits = jnp.asarray(out)[..., jnp.asarray(ids)].astype(jnp.float32)
    target = jnp.where(valid, labels, 0)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
    ce = jnp.where(valid, logz - picked, 0.0)
    correct = (jnp.argmax(logits, axis=-1) == target) & (weights != 0)
    return LossOutput(total=jnp.sum(ce * weights), tokens=jnp.sum(weights != 0).astype(jnp.float32),
                      metrics={"slot_correct": jnp.sum(correct).astype(jnp.float32),
                               "slot_active": jnp.sum((target == 1) & (weights != 0)).astype(jnp.float32)})
