"""SAM2 prompt encoder (transformers `Sam2PromptEncoder`): points, boxes and mask prompts -> sparse and dense
embeddings for the mask decoder.

Points (B, P, N, 2) in input-image pixels (x, y) with labels (B, P, N): 1 foreground, 0 background, -1 "not a
point" (gets `not_a_point_embed`), -10 padding (embedding zero). Without boxes a padding point (label -1) is
appended, as the reference does. Boxes (B, P, 4) x0, y0, x1, y1 become two corner points (+ `point_embed`
rows 2 and 3) and a "not a point". Coordinates are encoded with random Fourier features of the pixel centre
normalised by `image_size`. Masks (B, 1, 4e, 4e) go through two stride-2 convs (LayerNorm + activation) and a
1x1 conv to the dense embedding (B, e, e, D); without a mask the dense embedding is `no_mask_embed` everywhere.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.models.sam2.config import PromptEncoderConfig
from stvl_jax.nn.conv import Conv2d
from stvl_jax.nn.mlp import activation
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.params import normal, param

NOT_A_POINT, PADDING = -1, -10
# The Fourier matrices (image grid and prompts) under the SAM2 image model: fixed buffers in Meta's and
# transformers' SAM2, parameters here only so that checkpoints carry them; trainers never train them.
FOURIER_MATRICES = r"image/(shared_image_embedding|prompt_encoder/shared_embedding)/positional_embedding$"
_HIGHEST = jax.lax.Precision.HIGHEST


class RandomFourierEmbedding(nnx.Module):
    """coords in [0, 1]^2 (..., 2) -> (..., D): [sin, cos] of 2*pi * (2 * coords - 1) @ G, G ~ N(0, scale^2)
    of shape (2, D / 2) (a fixed buffer in the references; a parameter here, never trained: FOURIER_MATRICES)."""

    def __init__(self, dim: int, scale: float, *, rngs: nnx.Rngs):
        self.positional_embedding = param(rngs, normal(scale), (2, dim // 2), (None, None))

    def __call__(self, coords: jax.Array) -> jax.Array:
        c = 2 * coords.astype(jnp.float32) - 1
        c = 2 * math.pi * jnp.matmul(c, self.positional_embedding[...].astype(jnp.float32), precision=_HIGHEST)
        return jnp.concatenate([jnp.sin(c), jnp.cos(c)], axis=-1)


class MaskEmbedding(nnx.Module):
    """(B, 4e, 4e, 1) mask logits/probabilities -> (B, e, e, D)."""

    def __init__(self, config: PromptEncoderConfig, *, dtype, precision, rngs: nnx.Rngs):
        c, mi = config, config.mask_input_channels
        kw = dict(dtype=dtype, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(1, mi // 4, 2, stride=2, **kw)
        self.conv2 = Conv2d(mi // 4, mi, 2, stride=2, **kw)
        self.conv3 = Conv2d(mi, c.hidden_size, 1, out_axis="embed", **kw)
        self.layer_norm1 = LayerNorm(mi // 4, eps=c.layer_norm_eps, rngs=rngs)
        self.layer_norm2 = LayerNorm(mi, eps=c.layer_norm_eps, rngs=rngs)
        self.act = c.hidden_act

    def __call__(self, masks: jax.Array) -> jax.Array:
        act = activation(self.act)
        x = act(self.layer_norm1(self.conv1(masks)))
        x = act(self.layer_norm2(self.conv2(x)))
        return self.conv3(x)


class PromptEncoder(nnx.Module):
    def __init__(self, config: PromptEncoderConfig, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.shared_embedding = RandomFourierEmbedding(c.hidden_size, c.scale, rngs=rngs)
        self.mask_embed = MaskEmbedding(c, dtype=dtype, precision=precision, rngs=rngs)
        self.no_mask_embed = param(rngs, normal(1.0), (1, c.hidden_size), (None, "embed"))
        self.point_embed = param(rngs, normal(1.0), (c.num_point_embeddings, c.hidden_size), (None, "embed"))
        self.not_a_point_embed = param(rngs, normal(1.0), (1, c.hidden_size), (None, "embed"))
        self.dtype = dtype

    def _fourier(self, xy: jax.Array) -> jax.Array:
        return self.shared_embedding(xy / self.config.image_size)

    def embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """points (B, P, N, 2), labels (B, P, N) -> (B, P, N (+1 if pad), D)."""
        points = points.astype(jnp.float32) + 0.5  # pixel centres
        labels = labels.astype(jnp.int32)
        if pad:
            points = jnp.pad(points, ((0, 0), (0, 0), (0, 1), (0, 0)))
            labels = jnp.pad(labels, ((0, 0), (0, 0), (0, 1)), constant_values=NOT_A_POINT)
        emb = self._fourier(points)
        lab = labels[..., None]
        emb = jnp.where(lab == NOT_A_POINT, self.not_a_point_embed[...][0], emb)
        emb = jnp.where(lab == PADDING, 0.0, emb)
        table = self.point_embed[...].astype(jnp.float32)
        return emb + jnp.take(table, jnp.maximum(labels, 0), axis=0) * (lab >= 0)

    def embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """boxes (B, P, 4) -> (B, P, 3, D): two corners and a "not a point"."""
        b, p = boxes.shape[:2]
        corners = self._fourier(boxes.astype(jnp.float32).reshape(b, p, 2, 2) + 0.5)
        table = self.point_embed[...].astype(jnp.float32)
        corners = corners + table[2:4]
        pad = jnp.broadcast_to(self.not_a_point_embed[...].astype(jnp.float32), (b, p, 1, corners.shape[-1]))
        return jnp.concatenate([corners, pad], axis=2)

    def __call__(self, points: jax.Array | None, labels: jax.Array | None, boxes: jax.Array | None,
                 masks: jax.Array | None, batch_size: int = 1) -> tuple[jax.Array | None, jax.Array]:
        """-> sparse (B, P, T, D) (None without points and boxes), dense (B, e, e, D). masks: (B, 1, 4e, 4e)."""
        sparse = None
        if points is not None:
            if labels is None:
                raise ValueError("point prompts need labels")
            batch_size = points.shape[0]
            sparse = self.embed_points(points, labels, pad=boxes is None)
        if boxes is not None:
            batch_size = boxes.shape[0]
            box = self.embed_boxes(boxes)
            sparse = box if sparse is None else jnp.concatenate([sparse, box], axis=2)
        if masks is not None:
            dense = self.mask_embed(jnp.moveaxis(masks, 1, -1))
        else:
            e = self.config.embedding_size
            dense = jnp.broadcast_to(self.no_mask_embed[...][0], (batch_size, e, e, self.config.hidden_size))
        return (None if sparse is None else sparse.astype(self.dtype)), dense.astype(self.dtype)


@functools.lru_cache(maxsize=None)
def antialias_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) fp32 weights of PyTorch's `F.interpolate(mode="bilinear", antialias=True,
    align_corners=False)` along one axis (a triangle filter widened by the downscale factor, renormalised)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((j - center + 0.5) * inv), 0.0, None)
        total = w.sum()
        m[i, lo:hi] = w / total if total > 0 else 0.0
    return m.astype(np.float32)


def resize_masks(masks: jax.Array, size: int) -> jax.Array:
    """(B, C, H, W) -> (B, C, size, size), antialiased bilinear (how the reference brings a mask prompt of
    another size to the prompt encoder's input size)."""
    h, w = masks.shape[-2:]
    if (h, w) == (size, size):
        return masks
    mh, mw = (jnp.asarray(antialias_bilinear_matrix(n, size)) for n in (h, w))
    out = jnp.einsum("ph,bchw,qw->bcpq", mh, masks.astype(jnp.float32), mw, precision=_HIGHEST)
    return out.astype(masks.dtype)
