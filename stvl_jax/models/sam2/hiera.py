"""Hiera trunk of SAM2's image encoder (transformers `Sam2HieraDetModel`, Meta's `hieradet.Hiera`).

    pixels (B, H, W, 3) --patch embed (conv k7 s4 p3)--> (B, H/4, W/4, C0)
      + absolute position: bicubic-resized background table + tiled per-window table
    blocks, stage by stage: pre-norm windowed attention (window size per stage; some blocks global), the first
      block of stages 1..num_query_pool_stages max-pools its queries and its residual (2x2) and widens C
    -> one (B, h_s, w_s, C_s) map per stage

Everything is channels-last. Windows are zero-padded after the norm (as the reference does: padded tokens are
attended to as keys) and cut back afterwards. Block modules are attributes `block_{i}` (no integer keys in the
checkpoint tree).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.sam2.config import HieraConfig
from stvl_jax.nn.attention import dot_product_attention
from stvl_jax.nn.conv import Conv2d
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import MLP
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.params import param, zeros

_CUBIC_A = -0.75  # PyTorch's bicubic (Keys) coefficient; jax.image's "cubic" uses -0.5


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) fp32 weights of PyTorch's `F.interpolate(mode="bicubic", align_corners=False)` along one axis
    (edge taps clamped), so a 2-D resize is `M_h @ X @ M_w^T`."""
    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for o in range(out_size):
        real = scale * (o + 0.5) - 0.5
        idx = min(int(np.floor(real)), in_size - 1)
        t = min(max(real - idx, 0.0), 1.0)
        a = _CUBIC_A
        x0, x3 = t + 1.0, 2.0 - t
        w = (((a * x0 - 5 * a) * x0 + 8 * a) * x0 - 4 * a,
             ((a + 2) * t - (a + 3)) * t * t + 1,
             ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
             ((a * x3 - 5 * a) * x3 + 8 * a) * x3 - 4 * a)
        for k in range(4):
            m[o, min(max(idx - 1 + k, 0), in_size - 1)] += w[k]
    return m.astype(np.float32)


def max_pool(x: jax.Array, stride: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, H // sh, W // sw, C): non-overlapping max pool, trailing rows dropped (floor)."""
    b, h, w, c = x.shape
    sh, sw = stride
    x = x[:, : h // sh * sh, : w // sw * sw]
    return x.reshape(b, h // sh, sh, w // sw, sw, c).max(axis=(2, 4))


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * nh * nw, window, window, C), zero-padding H, W up to multiples of `window`;
    also returns (nh, nw)."""
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, -h % window), (0, -w % window), (0, 0)))
    nh, nw = x.shape[1] // window, x.shape[2] // window
    x = x.reshape(b, nh, window, nw, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, window, window, c), (nh, nw)


def window_unpartition(x: jax.Array, window: int, grid: tuple[int, int], size: tuple[int, int]) -> jax.Array:
    """Inverse of `window_partition`: (B * nh * nw, window, window, C) -> (B, H, W, C) cut to `size`."""
    nh, nw = grid
    c = x.shape[-1]
    b = x.shape[0] // (nh * nw)
    x = x.reshape(b, nh, nw, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh * window, nw * window, c)[:, : size[0], : size[1]]


class MultiScaleAttention(nnx.Module):
    """Self-attention over (B, h, w, dim) tokens (a window or the whole map), queries optionally max-pooled;
    -> (B, h', w', dim_out)."""

    def __init__(self, dim: int, dim_out: int, heads: int, query_stride: tuple[int, int] | None, *, init_std: float,
                 dtype, precision, rngs: nnx.Rngs):
        hd = dim_out // heads
        kw = dict(use_bias=True, dtype=dtype, precision=precision, init_std=init_std, rngs=rngs)
        self.qkv = Linear(dim, (3, heads, hd), in_axes=("vis_embed",), out_axes=(None, "vis_heads", "head_dim"),
                          **kw)
        self.proj = Linear((heads, hd), dim_out, in_axes=("vis_heads", "head_dim"), out_axes=("vis_embed",), **kw)
        self.query_stride = query_stride
        self.scale = hd ** -0.5
        self.precision = precision

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, *self.qkv.out_shape)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, L, heads, hd)
        if self.query_stride:
            q = max_pool(q.reshape(b, h, w, -1), self.query_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, *k.shape[2:])
        out = dot_product_attention(q, k, v, None, scale=self.scale, precision=self.precision)
        return self.proj(out).reshape(b, h, w, -1)


class MultiScaleBlock(nnx.Module):
    """Pre-norm (windowed) attention + MLP. `window` 0 = global attention; with `query_stride` the block
    downsamples 2x and widens dim -> dim_out (the residual goes through `proj` and the same pool)."""

    def __init__(self, config: HieraConfig, dim: int, dim_out: int, heads: int, window: int,
                 query_stride: tuple[int, int] | None, *, dtype, precision, rngs: nnx.Rngs):
        eps, std = config.layer_norm_eps, config.initializer_range
        self.layer_norm1 = LayerNorm(dim, eps=eps, rngs=rngs)
        self.attn = MultiScaleAttention(dim, dim_out, heads, query_stride, init_std=std, dtype=dtype,
                                        precision=precision, rngs=rngs)
        self.layer_norm2 = LayerNorm(dim_out, eps=eps, rngs=rngs)
        self.mlp = MLP(dim_out, int(dim_out * config.mlp_ratio), act=config.hidden_act, in_axis="vis_embed",
                       mlp_axis="vis_mlp", dtype=dtype, init_std=std, rngs=rngs)
        # the stage's widening projection: its output axis stays unsharded (in and out are both stage widths)
        self.proj = (Linear(dim, dim_out, in_axes=("vis_embed",), out_axes=(None,), use_bias=True, dtype=dtype,
                            precision=precision, init_std=std, rngs=rngs) if dim != dim_out else None)
        self.window = window
        self.query_stride = query_stride

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        x = self.layer_norm1(x)
        if self.proj is not None:
            residual = self.proj(x)
            if self.query_stride:
                residual = max_pool(residual, self.query_stride)
        if self.window > 0:
            x, grid = window_partition(x, self.window)
        x = self.attn(x)
        if self.window > 0:
            window = self.window // self.query_stride[0] if self.query_stride else self.window
            x = window_unpartition(x, window, grid, residual.shape[1:3])
        x = residual + x
        return x + self.mlp(self.layer_norm2(x))


class Hiera(nnx.Module):
    """pixel_values (B, H, W, C) channels-last -> tuple of per-stage maps (B, h_s, w_s, C_s), finest first."""

    def __init__(self, config: HieraConfig, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.patch_embed = Conv2d(c.num_channels, c.hidden_size, c.patch_kernel_size, stride=c.patch_stride,
                                  padding=c.patch_padding, out_axis="vis_embed", dtype=dtype, precision=precision,
                                  init_std=c.initializer_range, rngs=rngs)
        # reference init: zeros (the checkpoint fills them)
        self.pos_embed = param(rngs, zeros, (*c.window_positional_embedding_background_size, c.hidden_size),
                               (None, None, "vis_embed"))
        w0 = c.window_size_per_stage[0]
        self.pos_embed_window = param(rngs, zeros, (w0, w0, c.hidden_size), (None, None, "vis_embed"))
        i = 0
        for stage, n in enumerate(c.blocks_per_stage):
            for j in range(n):
                first = stage > 0 and j == 0  # takes the previous stage's width and window
                dim = c.embed_dim_per_stage[stage - 1] if first else c.embed_dim_per_stage[stage]
                window = c.window_size_per_stage[stage - 1] if first else c.window_size_per_stage[stage]
                window = 0 if i in c.global_attention_blocks else window
                pool = tuple(c.query_stride) if first and stage <= c.num_query_pool_stages else None
                setattr(self, f"block_{i}", MultiScaleBlock(
                    c, dim, c.embed_dim_per_stage[stage], c.num_attention_heads_per_stage[stage], window, pool,
                    dtype=dtype, precision=precision, rngs=rngs))
                i += 1
        self.dtype = dtype
        self.precision = precision

    def position_embedding(self, h: int, w: int) -> jax.Array:
        """(h, w, C): the background table resized bicubically to (h, w) plus the window table tiled over it."""
        table = self.pos_embed[...].astype(jnp.float32)
        mh = jnp.asarray(bicubic_matrix(table.shape[0], h))
        mw = jnp.asarray(bicubic_matrix(table.shape[1], w))
        pos = jnp.einsum("ph,hwc,qw->pqc", mh, table, mw, precision=jax.lax.Precision.HIGHEST)
        win = self.pos_embed_window[...].astype(jnp.float32)
        if h % win.shape[0] or w % win.shape[1]:
            raise InputError(f"the {h}x{w} patch grid is not a multiple of the first stage's window "
                             f"{win.shape[0]}x{win.shape[1]} (image size vs window_size_per_stage[0])")
        return pos + jnp.tile(win, (h // win.shape[0], w // win.shape[1], 1))

    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, ...]:
        x = self.patch_embed(pixel_values)
        x = x + self.position_embedding(x.shape[1], x.shape[2]).astype(x.dtype)
        outs = []
        ends = set(self.config.stage_ends)
        for i in range(self.config.depth):
            x = getattr(self, f"block_{i}")(x)
            if i in ends:
                outs.append(x)
        return tuple(outs)
