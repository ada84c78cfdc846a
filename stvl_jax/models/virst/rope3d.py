"""3D rotary position embedding of VIRST's SegPrompter cross-attention (upstream `RoPE3D` in model/seg_prompter.py).

A head of `head_dim` channels is split into a time part, a row part and a column part of `d = (head_dim // 2)
// 3 * 2` channels each, plus `head_dim - 3d` unrotated channels at the end (head dim 32: 10 + 10 + 10 + 2).
Inside a part, channels are rotated in adjacent pairs (2i, 2i+1) (pairwise-interleaved, not rotate_half) by the
angle `pos * theta ** (-i / (d / 2))`, i < d / 2. Keys (the memory: T frames x G x G grid cells, row-major)
get all three parts rotated by their (t, y, x); queries (Q [SEG] vectors x T frames, q-major: query s has frame
s % T) get the time part only, so a query-key score depends on the frame offset t_key - t_query and on the
key's own (y, x).

Everything is expressed as one angle per channel pair, (S, head_dim // 2); unrotated pairs have angle 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope3d_split(head_dim: int) -> tuple[int, int]:
    """-> (channels per axis part, unrotated channels) = (10, 2) for head dim 32, as upstream."""
    d = (head_dim // 2) // 3 * 2
    if d == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3D RoPE")
    return d, head_dim - 3 * d


def axis_inv_freq(d: int, theta: float) -> np.ndarray:
    """(d // 2,) frequencies of one axis part: theta ** (-i / (d // 2)), fp32 as torch computes them."""
    half = d // 2
    return (1.0 / float(theta) ** (np.arange(half, dtype=np.float32) / np.float32(half))).astype(np.float32)


def _angles(t: np.ndarray, y: np.ndarray | None, x: np.ndarray | None, head_dim: int, theta: float) -> np.ndarray:
    """Per-position pair angles (S, head_dim // 2): [t part | y part | x part | unrotated], None = not rotated."""
    d, free = rope3d_split(head_dim)
    inv = axis_inv_freq(d, theta)
    parts = []
    for pos in (t, y, x):
        parts.append(np.zeros((len(t), d // 2), np.float32) if pos is None
                     else pos.astype(np.float32)[:, None] * inv[None])
    parts.append(np.zeros((len(t), free // 2), np.float32))
    return np.concatenate(parts, axis=1)


def key_angles(num_frames: int, grid: int, head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """(T * G * G, head_dim // 2) angles of memory rows laid out (t, y, x) row-major."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(grid), np.arange(grid), indexing="ij")
    return _angles(t.reshape(-1), y.reshape(-1), x.reshape(-1), head_dim, theta)


def query_angles(num_queries: int, num_frames: int, head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """(Q * T, head_dim // 2) angles of queries laid out q-major (query s belongs to frame s % T): time only."""
    t = np.tile(np.arange(num_frames), num_queries)
    return _angles(t, None, None, head_dim, theta)


def apply_pair_rotation(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotate adjacent channel pairs: x (..., S, H, D), angles (S, D // 2) -> same shape as x.
    (x_2i, x_2i+1) -> (x_2i cos a - x_2i+1 sin a, x_2i+1 cos a + x_2i sin a); computed in fp32."""
    dtype = x.dtype
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    a = jnp.asarray(angles, jnp.float32)[:, None, :]  # (S, 1, D/2): broadcast over heads
    cos, sin = jnp.cos(a), jnp.sin(a)
    even, odd = pairs[..., 0], pairs[..., 1]
    out = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
    return out.reshape(x.shape).astype(dtype)
