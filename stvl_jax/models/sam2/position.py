"""SAM2's sine position encodings (host-side fp32 constants of static grids, or traced 1-D positions).

    sine_2d   (H, W, C) DETR-style normalised 2-D table: the FPN levels (neck) and the memory (memory encoder)
    sine_1d   (..., C) [sin | cos] of scalar positions: the object pointers' temporal positions
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sine_2d(height: int, width: int, channels: int, temperature: float = 10000.0) -> np.ndarray:
    """(height, width, channels) fp32 normalised 2-D sine table (scale 2*pi, 1-based row/column index), [y half,
    x half], each half interleaving sin (even features) and cos (odd features), frequencies
    temperature^(2 floor(i/2) / (channels / 2)) — HF `Sam2PositionEmbeddingSine` / `Sam2VideoPositionEmbeddingSine`
    with `normalize=True`, in the same fp32 operation order."""
    if channels % 2:
        raise ValueError(f"sine position encoding needs an even channel count, got {channels}")
    f = np.float32
    npf = channels // 2
    y = np.arange(1, height + 1, dtype=f)[:, None] * np.ones((1, width), f)
    x = np.arange(1, width + 1, dtype=f)[None, :] * np.ones((height, 1), f)
    two_pi = f(2 * np.pi)
    y = y / (y[-1:, :] + f(1e-6)) * two_pi
    x = x / (x[:, -1:] + f(1e-6)) * two_pi
    dim_t = np.arange(npf, dtype=np.int64).astype(f)
    dim_t = f(temperature) ** (f(2) * np.floor(dim_t / f(2)) / f(npf))

    def interleave(pos):
        pos = pos[..., None] / dim_t  # (H, W, npf)
        return np.stack([np.sin(pos[..., 0::2]), np.cos(pos[..., 1::2])], axis=-1).reshape(height, width, -1)

    return np.concatenate([interleave(y), interleave(x)], axis=-1).astype(f)


def sine_1d(positions: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """(...,) fp32 positions -> (..., dim) [sin | cos] table (HF `get_1d_sine_pe`)."""
    half = dim // 2
    dim_t = np.arange(half, dtype=np.float32)
    dim_t = np.float32(temperature) ** (np.float32(2) * np.floor(dim_t / np.float32(2)) / np.float32(half))
    pe = positions.astype(jnp.float32)[..., None] / jnp.asarray(dim_t)
    return jnp.concatenate([jnp.sin(pe), jnp.cos(pe)], axis=-1)
