"""SAM2's 2-D axial RoPE (memory attention): x and y frequencies, rotated in adjacent pairs.

Not `nn/rope.vision_rope_cos_sin`: that one pairs the two halves of the head (`rotate_half`, Qwen-VL); SAM2
(HF `Sam2VideoVisionRotaryEmbedding`, Meta `compute_axial_cis` + complex multiply) rotates pairs (2i, 2i+1),
with the layout [x freqs, y freqs] each repeated twice in place. Tables are host-side fp32 constants of the
static grid; the rotation runs in fp32 as in the references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.nn.rope import inv_frequencies


def axial_rope_cos_sin(feat_sizes: tuple[int, int], head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """feat_sizes = (width, height) of the token grid (row-major tokens, x = t % width, y = t // width) ->
    cos, sin: (width * height, head_dim) fp32; head_dim / 4 frequencies per axis."""
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs head_dim divisible by 4, got {head_dim}")
    end_x, end_y = int(feat_sizes[0]), int(feat_sizes[1])
    t = np.arange(end_x * end_y)
    pos = np.stack([t % end_x, t // end_x], axis=-1).astype(np.float32)  # (N, 2): (x, y)
    freqs = pos[..., None] * inv_frequencies(head_dim // 2, theta)  # (N, 2, head_dim / 4), fp32
    freqs = np.repeat(freqs.reshape(freqs.shape[0], -1), 2, axis=-1)  # [x freqs, y freqs], each twice in place
    return np.cos(freqs), np.sin(freqs)


def rotate_pairwise(x: jax.Array) -> jax.Array:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_axial_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: (B, L, H, D); cos, sin: (L, D). Rotated in fp32, returned in x's dtype."""
    h = x.astype(jnp.float32)
    cos, sin = jnp.asarray(cos, jnp.float32)[:, None], jnp.asarray(sin, jnp.float32)[:, None]
    return (h * cos + rotate_pairwise(h) * sin).astype(x.dtype)
