"""SAM2 mask postprocessing on the device: low-res logits -> the video's resolution, then a threshold.

As transformers' `Sam2VideoVideoProcessor.post_process_masks` (and Meta's predictor): bilinear (half-pixel
centres, no antialiasing) to the model's square input size, crop to the resized frame (the whole square: SAM2
resizes without padding), bilinear again to the original (H, W); `> threshold` gives the mask.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _bilinear(x: jax.Array, h: int, w: int) -> jax.Array:
    # torch's F.interpolate(mode="bilinear", align_corners=False, antialias=False), also when shrinking
    return jax.image.resize(x, x.shape[:-2] + (h, w), method="bilinear", antialias=False)


def upsample_logits(logits: jax.Array, image_size: int, height: int, width: int) -> jax.Array:
    """(..., h, w) low-res mask logits -> (..., height, width) float32 logits at the video's size."""
    x = _bilinear(logits.astype(jnp.float32), image_size, image_size)
    return _bilinear(x, height, width)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def masks_from_logits(logits: jax.Array, image_size: int, height: int, width: int,
                      threshold: float = 0.0) -> jax.Array:
    """(..., h, w) low-res logits -> (..., height, width) bool masks (jitted: one compile per shape)."""
    return upsample_logits(logits, image_size, height, width) > threshold
