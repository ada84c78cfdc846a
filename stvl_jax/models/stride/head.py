"""STRIDE's head: the LM head restricted to the two label rows, read at the slot positions.

There is no separate head (as in STRIDE): hidden states at `<activation>` positions go through the LM
head and only the columns of `<inactive>` and `<active>` are kept -> 2-way logits (class 0 = inactive). Labels
are predicted in place (the hidden state at a masked slot token predicts that slot, no shift).

Its training loss is `stvl_jax.train.stride_loss` (`loss.kind: stride_activation`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.models.stride.config import StrideConfig


def activation_logits(model, hidden: jax.Array, cfg: StrideConfig) -> jax.Array:
    """(..., D) hidden states -> (..., 2) logits over [<inactive>, <active>] (float32)."""
    return model.token_logits(hidden, cfg.label_token_ids).astype(jnp.float32)


def p_active(logits2: jax.Array) -> jax.Array:
    """Softmax probability of class 1: (..., 2) -> (...)."""
    return jax.nn.softmax(logits2.astype(jnp.float32), axis=-1)[..., 1]


def second_copy_positions(input_ids: np.ndarray, cfg: StrideConfig) -> np.ndarray:
    """(B, L) host token ids -> (B, total_slots) indices of the last copy's slot tokens (any of the three
    slot tokens; the window is the last `copies * total_slots` of them in each row)."""
    ids = np.asarray(input_ids)
    is_slot = np.isin(ids, cfg.slot_token_ids)
    n = cfg.total_slots
    out = np.zeros((ids.shape[0], n), np.int32)
    for b in range(ids.shape[0]):
        pos = np.flatnonzero(is_slot[b])
        if len(pos) < cfg.copies * n:
            raise InputError(f"row {b} holds {len(pos)} slot tokens; a window of {n} slots x {cfg.copies} "
                             f"copies needs {cfg.copies * n}")
        out[b] = pos[-n:]
    return out
