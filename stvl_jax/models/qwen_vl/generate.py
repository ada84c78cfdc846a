"""Batched generation with a static-shape KV cache: greedy or sampling (temperature / top-k / top-p).

One jitted program per (batch, prompt length, vision layout, max_new_tokens): prefill over the left-padded
prompt, then a `lax.while_loop` of single-token decode steps. M-RoPE positions continue from each row's last
prompt position (+1 per step, on all three rows) — what transformers' `generate` does; for Qwen3-VL and images
this equals `rope_deltas + text position`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.inputs import ModelInputs
from stvl_jax.models.qwen_vl.text import KVCache
from stvl_jax.sharding import auto_mesh


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off


def sample_next(logits: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """logits (B, V) -> token ids (B,). Greedy unless cfg.do_sample (temperature, then top-k, then top-p)."""
    if not cfg.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / max(cfg.temperature, 1e-6)
    neg = jnp.finfo(jnp.float32).min
    if cfg.top_k > 0:
        kth = jax.lax.top_k(logits, min(cfg.top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if cfg.top_p < 1.0:
        order = jnp.argsort(logits, axis=-1)  # ascending, as HF's TopPLogitsWarper
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove_sorted = (cum <= 1 - cfg.top_p).at[:, -1].set(False)  # always keep the most likely token
        remove = jnp.take_along_axis(remove_sorted, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(remove, neg, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _cache_capacity(length: int, new_tokens: int, multiple: int = 64) -> int:
    return -(-(length + new_tokens) // multiple) * multiple


@nnx.jit(static_argnums=(2, 3, 4, 5))
def _generate(model, inputs: ModelInputs, max_new_tokens: int, sampling: SamplingConfig, eos_ids: tuple[int, ...],
              pad_id: int, rng):
    bsz, length = inputs.input_ids.shape
    cache = KVCache.init(model.config.text, bsz, _cache_capacity(length, max_new_tokens), model.dtype)
    logits, _, cache = model.forward(inputs, cache, last_only=True)
    rng, key = jax.random.split(rng)
    token = sample_next(logits[:, -1], key, sampling)
    last_pos = inputs.position_ids[:, :, -1:]  # (3, B, 1)
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
    done = jnp.isin(token, eos)
    out = jnp.full((bsz, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)

    def cond(state):
        step, _, _, done, _, _ = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, token, cache, done, out, rng = state
        step_inputs = ModelInputs(token[:, None], jnp.ones((bsz, 1), jnp.int32), last_pos + step)
        logits, _, cache = model.forward(step_inputs, cache)
        rng, key = jax.random.split(rng)
        nxt = sample_next(logits[:, -1], key, sampling)
        nxt = jnp.where(done, pad_id, nxt)
        out = out.at[:, step].set(nxt)
        return step + 1, nxt, cache, done | jnp.isin(nxt, eos), out, rng

    state = (jnp.int32(1), token, cache, done, out, rng)
    return jax.lax.while_loop(cond, body, state)[4]


def generate(
    model,
    batch: Mapping,
    *,
    max_new_tokens: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> np.ndarray:
    """Generate `max_new_tokens` ids per row of an HF-style batch (left-padded) -> (B, max_new_tokens) int32.

    Rows that emit an EOS id are continued with `pad_token_id` (default: the first EOS id, else 0). `eos_token_id`
    defaults to the model config's; pass `eos_token_id=()` to never stop early.
    """
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    inputs, _ = model.prepare(batch)
    mask = np.asarray(inputs.attention_mask)
    if not mask[:, -1].all():
        raise InputError("generation needs left-padded prompts (attention_mask[:, -1] must be 1 for every row)")
    if eos_token_id is None:
        eos_token_id = model.config.eos_token_id
    eos = (eos_token_id,) if isinstance(eos_token_id, int) else tuple(int(e) for e in eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    sampling = SamplingConfig(do_sample, float(temperature), int(top_k), float(top_p))
    mesh = auto_mesh(getattr(model, "mesh", None))
    if mesh is None:
        out = _generate(model, inputs, int(max_new_tokens), sampling, eos, int(pad), jax.random.key(seed))
    else:
        from stvl_jax.models.qwen_vl.model import place_inputs

        with jax.set_mesh(mesh):
            out = _generate(model, place_inputs(inputs, mesh), int(max_new_tokens), sampling, eos, int(pad),
                            jax.random.key(seed))
    return np.asarray(out)
