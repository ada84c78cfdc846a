"""The [SEG] token on the LLM side: adding it to the vocabulary, finding its positions, reading the hidden states
there (teacher-forced: the answer with its [SEG] tokens is part of the input, as VIRST evaluates), and the hook of
the generating mode (the model writes the answer, then the prompt + answer is read teacher-forced).

Prompt text and label masking are numpy rules in `host/prompts.py` (pipelines import them).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.vocab import resize_vocab
from stvl_jax.models.virst.config import VirstConfig
from stvl_jax.models.virst.host.prompts import SEG_TOKEN


def add_seg_token(lm, tokenizer, seg_token: str = SEG_TOKEN):
    """Add `seg_token` to the tokenizer (upstream `tokenizer.add_tokens`) and resize the Qwen-VL model's
    embedding (and LM head) to `len(tokenizer)`, new rows = the mean of the old ones (`resize_vocab`).
    -> (resized model, token id)."""
    tokenizer.add_tokens([seg_token])
    token_id = tokenizer.convert_tokens_to_ids(seg_token)
    if len(tokenizer) != lm.config.text.vocab_size:
        lm = resize_vocab(lm, len(tokenizer))
    return lm, int(token_id)


def seg_positions(input_ids: jax.Array, seg_token_id: int, count: int) -> tuple[jax.Array, jax.Array]:
    """(B, L) ids -> (positions (B, count) of each row's first `count` [SEG] tokens, 0 where a row has fewer;
    valid (B, count) bool). Traceable."""
    is_seg = input_ids == seg_token_id
    rank = jnp.cumsum(is_seg, axis=1) - 1  # (B, L): index of each [SEG] among its row's
    hit = is_seg[:, None, :] & (rank[:, None, :] == jnp.arange(count)[None, :, None])  # (B, count, L)
    return jnp.argmax(hit, axis=-1).astype(jnp.int32), hit.any(-1)


def gather_rows(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x (B, L, D), positions (B, K) -> (B, K, D)."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


def scatter_rows(x: jax.Array, positions: jax.Array, values: jax.Array, valid: jax.Array) -> jax.Array:
    """Write values (B, K, D) into x (B, L, D) at positions (B, K) where valid (B, K)."""
    b = jnp.arange(x.shape[0])[:, None]
    # invalid slots point past the end and are dropped (their position 0 may be a real [SEG] of the row)
    target = jnp.where(valid, positions, x.shape[1])
    return x.at[b, target].set(values.astype(x.dtype), mode="drop")


def seg_hidden_states(hidden: jax.Array, input_ids: jax.Array, cfg: VirstConfig, count: int
                      ) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced reading: last-layer hidden (B, L, D) at each row's [SEG] tokens -> ((B, count, D),
    valid (B, count)). The state AT the [SEG] position is read (upstream indexes hidden states where
    labels == [SEG], unshifted)."""
    if cfg.seg.token_id is None:
        raise InputError("the VIRST config has no seg.token_id: add the [SEG] token first (add_seg_token)")
    pos, valid = seg_positions(input_ids, cfg.seg.token_id, count)
    return gather_rows(hidden, pos), valid


def teacher_forced_batch(batch: Mapping, generated: np.ndarray, eos_token_ids: tuple[int, ...],
                         pad_token_id: int = 0) -> dict:
    """Generating-mode hook: the prompt batch + the generated answers (B, N) (cut after the first EOS) -> a
    batch whose rows are prompt + answer, right-padded, without `position_ids` (recomputed by `prepare`), for
    the teacher-forced forward that reads the [SEG] hidden states the model wrote itself."""
    ids = np.asarray(batch["input_ids"])
    mask = np.asarray(batch["attention_mask"]) if batch.get("attention_mask") is not None else np.ones_like(ids)
    generated = np.asarray(generated)
    if generated.ndim != 2 or generated.shape[0] != ids.shape[0]:
        raise InputError(f"generated ids have shape {generated.shape}; expected ({ids.shape[0]}, new tokens)")
    rows = []
    for prompt, m, answer in zip(ids, mask, generated):
        stop = np.nonzero(np.isin(answer, eos_token_ids))[0]
        answer = answer[: stop[0] + 1] if len(stop) else answer
        rows.append(np.concatenate([prompt[m.astype(bool)], answer]))
    width = max(len(r) for r in rows)
    out_ids = np.full((len(rows), width), pad_token_id, ids.dtype)
    out_mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        out_ids[i, :len(r)], out_mask[i, :len(r)] = r, 1
    out = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "position_ids", "labels",
                                                        "loss_weights")}
    return {**out, "input_ids": out_ids, "attention_mask": out_mask}
