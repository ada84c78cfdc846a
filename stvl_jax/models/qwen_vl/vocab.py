"""Vocabulary resizing (added special tokens: Streamo's state tokens, STRIDE's activation tokens).

`resize_vocab` returns a new model whose config has the new `vocab_size`; rows kept from the old table are
copied bit-exactly, new rows are the mean of the old rows (plus optional small noise) — so the resized model
gives the same logits on old tokens and a neutral start for new ones. Works for tied and untied heads, grows
or shrinks, and keeps parameter shardings. The converters export the resized table like any other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.qwen_vl.config import QwenVLConfig


def _resize_rows(table: jax.Array, new_rows: int, axis: int, noise: float, key) -> jax.Array:
    old_rows = table.shape[axis]
    if new_rows <= old_rows:
        return jax.lax.slice_in_dim(table, 0, new_rows, axis=axis)
    mean = jnp.mean(table.astype(jnp.float32), axis=axis, keepdims=True)
    shape = list(table.shape)
    shape[axis] = new_rows - old_rows
    extra = jnp.broadcast_to(mean, shape)
    if noise:
        extra = extra + noise * jax.random.normal(key, shape, jnp.float32)
    return jnp.concatenate([table, extra.astype(table.dtype)], axis=axis)


def resize_vocab(model, new_vocab_size: int, *, noise: float = 0.0, seed: int = 0):
    """Return a copy of `model` with `new_vocab_size` embedding rows (and LM-head columns)."""
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration

    config: QwenVLConfig = model.config
    if new_vocab_size <= 0:
        raise ValueError(f"new_vocab_size must be positive, got {new_vocab_size}")
    new_config = config.model_copy(update={"text": config.text.model_copy(update={"vocab_size": new_vocab_size})})
    k_embed, k_head = jax.random.split(jax.random.key(seed))
    state = nnx.state(model)
    embed = state["language_model"]["embed_tokens"]["embedding"]
    embed.set_value(_resize_rows(embed.get_value(), new_vocab_size, 0, noise, k_embed))
    if not config.tie_word_embeddings:
        head = state["lm_head"]["kernel"]
        head.set_value(_resize_rows(head.get_value(), new_vocab_size, 1, noise, k_head))

    options = model.build_options()
    new_model = nnx.eval_shape(lambda: QwenVLForConditionalGeneration(new_config, rngs=nnx.Rngs(0), **options))
    nnx.update(new_model, state)
    mesh = getattr(model, "mesh", None)
    if mesh is not None:
        from stvl_jax.sharding import place_on_mesh

        place_on_mesh(new_model, mesh)
    return new_model
