"""Rotary position embeddings: 1-D, Qwen-VL M-RoPE (interleaved and chunked), 2-D vision RoPE.

All variants use the `rotate_half` convention (first half / second half of the head dim are the pair), with
`cos`/`sin` of shape (..., L, head_dim) = concat(freqs, freqs). Angles are computed in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def inv_frequencies(dim: int, theta: float) -> np.ndarray:
    """(dim // 2,) inverse frequencies 1 / theta^(2i/dim), in fp32 as PyTorch computes them."""
    exponent = np.arange(0, dim, 2, dtype=np.float64) / dim
    return (1.0 / (float(theta) ** exponent)).astype(np.float32)


def rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: (B, L, H, D) or (N, H, D); cos/sin broadcast over the head axis: (B, L, D) or (N, D)."""
    cos = jnp.expand_dims(cos, -2)
    sin = jnp.expand_dims(sin, -2)
    return x * cos + rotate_half(x) * sin


def mrope_axis_map(half_dim: int, section: Sequence[int], interleaved: bool) -> np.ndarray:
    """For each of the `half_dim` frequencies, which position row (0=T, 1=H, 2=W) drives it.

    interleaved (Qwen3-VL): frequency j uses H if j % 3 == 1 and j < 3*section[1], W if j % 3 == 2 and
    j < 3*section[2], else T. chunked (Qwen2-VL / Qwen2.5-VL): the first section[0] frequencies use T, the next
    section[1] use H, the last section[2] use W.
    """
    if sum(section) != half_dim:
        raise ValueError(f"mrope_section {list(section)} must sum to head_dim // 2 = {half_dim}")
    axis = np.zeros(half_dim, dtype=np.int32)
    if interleaved:
        for row, offset in ((1, 1), (2, 2)):
            idx = np.arange(offset, section[row] * 3, 3)
            axis[idx[idx < half_dim]] = row
    else:
        start = 0
        for row, size in enumerate(section):
            axis[start : start + size] = row
            start += size
    return axis


def mrope_cos_sin(position_ids: jax.Array, inv_freq: np.ndarray, axis_map: np.ndarray, dtype=jnp.float32):
    """position_ids: (3, B, L) -> cos, sin: (B, L, 2 * len(inv_freq)) in `dtype`."""
    pos = jnp.moveaxis(position_ids[np.asarray(axis_map)], 0, -1)  # (B, L, F): the driving row per frequency
    freqs = pos.astype(jnp.float32) * jnp.asarray(inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def vision_rope_cos_sin(pos_hw: jax.Array, head_dim: int, theta: float):
    """2-D axial RoPE of the Qwen-VL vision towers: pos_hw (N, 2) (row, col) -> cos, sin (N, head_dim).

    head_dim/4 frequencies per axis; layout concat(freq_h, freq_w) repeated twice (rotate_half pairs).
    """
    inv_freq = inv_frequencies(head_dim // 2, theta)  # (head_dim // 4,)
    freqs = pos_hw.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # (N, 2, F)
    freqs = freqs.reshape(freqs.shape[0], -1)  # (N, 2F) = [h freqs, w freqs]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)
