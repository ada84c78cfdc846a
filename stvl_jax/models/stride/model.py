"""A STRIDE model = a Qwen3-VL model + `StrideConfig`: vocabulary preparation, loading, and window scoring.

    model, cfg = load_stride("runs/stride/checkpoints/600", tokenizer)   # any stvl-jax Qwen3-VL checkpoint
    probs = window_probs(model, cfg, batch)                             # (B, total_slots) p(<active>)

`prepare_model` is the reference's setup step: add the three tokens to the tokenizer, resize the embedding
(and LM head) to `len(tokenizer)` — new rows are the mean of the old ones — and name the architecture
`Qwen3VLForProactiveMDM`, which `stvl convert export` writes to config.json.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import ConfigError
from stvl_jax.models.qwen_vl.vocab import resize_vocab
from stvl_jax.models.stride.config import ARCHITECTURE, StrideConfig, add_stride_tokens, recorded_settings
from stvl_jax.models.stride.head import activation_logits, p_active, second_copy_positions


def prepare_model(model, tokenizer, **window):
    """-> (model resized to len(tokenizer) with the STRIDE architecture name, StrideConfig).

    Adds the three tokens to `tokenizer` if missing. `window`: StrideConfig fields (window, resolution, ...)."""
    if model.config.family != "qwen3_vl":
        raise ConfigError(f"STRIDE is built on Qwen3-VL, got a {model.config.family} model")
    add_stride_tokens(tokenizer)
    n = len(tokenizer)
    if n != model.config.text.vocab_size:
        model = resize_vocab(model, n)
    model.config = model.config.model_copy(update={"architecture": ARCHITECTURE})
    cfg = StrideConfig.from_tokenizer(tokenizer, **window)
    cfg.check_vocab(model.config.text.vocab_size)
    return model, cfg


def load_stride(path: str | Path, tokenizer, *, mesh=None, dtype=None, **window):
    """-> (model, StrideConfig). Window fields: `window` kwargs, else those recorded with the checkpoint
    (`recorded_settings`: an imported hub config's trigger_window_past, or the training run's pipeline), else
    the reference defaults (256 slots of 1 s)."""
    from stvl_jax.models.qwen_vl.loading import load_model

    settings = {**recorded_settings(path)["window"], **{k: v for k, v in window.items() if v is not None}}
    model = load_model(path, mesh=mesh, dtype=dtype)
    if model.config.family != "qwen3_vl":
        raise ConfigError(f"{str(path)!r} holds a {model.config.family} model; STRIDE needs Qwen3-VL")
    cfg = StrideConfig.from_tokenizer(tokenizer, **settings)
    cfg.check_vocab(model.config.text.vocab_size, f"checkpoint {str(path)!r}")
    return model, cfg


@nnx.jit(static_argnums=(3,))
def _window_probs(model, inputs, positions, label_ids):
    _, hidden, _ = model.forward(inputs, return_hidden=True, compute_logits=False)
    picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # (B, W, D)
    return p_active(model.token_logits(picked, label_ids))


def window_probs(model, cfg: StrideConfig, batch: dict) -> np.ndarray:
    """Full-sequence scoring (no cache): the HF-style batch of [query, video, slots x copies] rows ->
    p(<active>) at the last copy's slots, (B, total_slots). Training-time layout and position ids."""
    batch = {k: v for k, v in batch.items() if k not in ("activation_labels", "labels", "loss_weights")}
    positions = second_copy_positions(batch["input_ids"], cfg)
    inputs, _ = model.prepare(batch)
    out = _window_probs(model, jax.tree.map(jnp.asarray, inputs), jnp.asarray(positions), cfg.label_token_ids)
    return np.asarray(out)


__all__ = ["prepare_model", "load_stride", "window_probs", "activation_logits"]
