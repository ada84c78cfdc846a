"""SAM2 memory encoder: fuses a frame's pixel features with its predicted mask into a spatial memory.

    mask (B, Hm, Wm) --downsampler (strided conv + LN + act, x log_s(total_stride)) + 1x1--> (B, H, W, C)
    pix  (B, H, W, C) --1x1 projection--> + mask --fuser (ConvNeXt blocks)--> 1x1 --> (B, H, W, mem_dim)
    position encoding: 2-D normalised sine table of the (H, W) grid, (B, H, W, mem_dim)

Channels-last throughout (HF/Meta are channels-first; the numbers are the same). Conv kernels are stored
(in / groups, kh, kw, out): HF's (out, in, kh, kw) flattened to a matrix and transposed, as the converters do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.models.sam2.memory_config import MemoryEncoderConfig
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import activation
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.params import normal, param, zeros
from stvl_jax.nn.stack import make_stack, run_stack

_LN_EPS = 1e-6  # HF Sam2VideoLayerNorm / Meta LayerNorm2d


class Conv2d(nnx.Module):
    """NHWC 2-D convolution, kernel (in / groups, kh, kw, out), symmetric zero padding, optional groups."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
                 in_axis: str | None, out_axis: str | None, dtype=jnp.float32, param_dtype=jnp.float32,
                 init_std: float = 0.02, rngs: nnx.Rngs):
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"conv channels {in_ch} -> {out_ch} are not multiples of groups={groups}")
        shape = (in_ch // groups, kernel, kernel, out_ch)
        self.kernel = param(rngs, normal(init_std), shape, (in_axis, "sam2_window", "sam2_window", out_axis),
                            param_dtype)
        self.bias = param(rngs, zeros, (out_ch,), (out_axis,), param_dtype)
        self.stride, self.padding, self.groups, self.dtype = stride, padding, groups, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), self.kernel[...].astype(self.dtype), window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)), dimension_numbers=("NHWC", "IHWO", "NHWC"),
            feature_group_count=self.groups, preferred_element_type=jnp.float32)
        return (y + self.bias[...].astype(jnp.float32)).astype(self.dtype)


def sine_position_encoding(height: int, width: int, channels: int, temperature: float = 10000.0) -> np.ndarray:
    """(height, width, channels) fp32 normalised 2-D sine table (DETR style, scale 2*pi), [y half, x half], each
    half interleaving sin (even features) and cos (odd features) — HF `Sam2VideoPositionEmbeddingSine` with
    `normalize=True` and `num_position_features = channels // 2`, in the same fp32 operation order."""
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


class _DownsampleLayer(nnx.Module):
    def __init__(self, cfg: MemoryEncoderConfig, in_ch: int, out_ch: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, cfg.downsampler_kernel_size, stride=cfg.downsampler_stride,
                           padding=cfg.downsampler_padding, in_axis="sam2_chans", out_axis="sam2_chans", dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)
        self.layer_norm = LayerNorm(out_ch, eps=_LN_EPS, param_dtype=param_dtype, rngs=rngs)
        self.act = cfg.downsampler_act

    def __call__(self, x):
        return activation(self.act)(self.layer_norm(self.conv(x)))


class MaskDownSampler(nnx.Module):
    """(B, Hm, Wm, 1) mask -> (B, Hm / total_stride, Wm / total_stride, embed_dim); channels grow by stride^2
    per layer (1 -> 4 -> 16 -> 64 -> 256 for SAM2), then a 1x1 conv to embed_dim."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = 1
        self.num_layers = cfg.num_downsampler_layers
        # one attribute per layer (their shapes differ, so no stack; no nnx.List: Orbax integer-key issue)
        for i in range(self.num_layers):
            out = ch * cfg.downsampler_stride ** 2
            setattr(self, f"layers_{i}", _DownsampleLayer(cfg, ch, out, **kw))
            ch = out
        self.final_conv = Conv2d(ch, cfg.downsampler_embed_dim, 1, in_axis="sam2_chans", out_axis="vis_embed", **kw)

    def __call__(self, x):
        for i in range(self.num_layers):
            x = getattr(self, f"layers_{i}")(x)
        return self.final_conv(x)


class FuserBlock(nnx.Module):
    """ConvNeXt block: x + scale * pw2(act(pw1(LN(depthwise_conv(x)))))."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d, i = cfg.fuser_embed_dim, cfg.fuser_intermediate_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.depthwise_conv = Conv2d(d, d, cfg.fuser_kernel_size, padding=cfg.fuser_padding, groups=d,
                                     in_axis="sam2_chans", out_axis="vis_embed", **kw)
        self.layer_norm = LayerNorm(d, eps=_LN_EPS, param_dtype=param_dtype, rngs=rngs)
        self.pointwise_conv1 = Linear(d, i, in_axes=("vis_embed",), out_axes=("vis_mlp",), use_bias=True, **kw)
        self.pointwise_conv2 = Linear(i, d, in_axes=("vis_mlp",), out_axes=("vis_embed",), use_bias=True, **kw)
        init = jax.nn.initializers.constant(cfg.fuser_layer_scale_init_value)
        self.scale = param(rngs, init, (d,), ("norm",), param_dtype)
        self.act = cfg.fuser_act

    def __call__(self, x):
        h = self.layer_norm(self.depthwise_conv(x))
        h = self.pointwise_conv2(activation(self.act)(self.pointwise_conv1(h)))
        return x + self.scale[...].astype(h.dtype) * h


class MemoryFuser(nnx.Module):
    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.layers = make_stack(lambda r: FuserBlock(cfg, dtype=dtype, param_dtype=param_dtype, rngs=r),
                                 cfg.fuser_num_layers, rngs)

    def __call__(self, x):
        x, _ = run_stack(self.layers, lambda layer, h, _: (layer(h), None), x)
        return x


class MemoryEncoder(nnx.Module):
    """HF `Sam2VideoMemoryEncoder` / Meta `MemoryEncoder` (skip_mask_sigmoid: the caller scales the mask)."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        c = cfg.hidden_size
        self.config = cfg
        self.mask_downsampler = MaskDownSampler(cfg, **kw)
        self.feature_projection = Conv2d(c, c, 1, in_axis="vis_embed", out_axis="sam2_chans", **kw)
        self.memory_fuser = MemoryFuser(cfg, **kw)
        self.projection = Conv2d(c, cfg.output_channels, 1, in_axis="vis_embed", out_axis="sam2_mem", **kw)

    def __call__(self, pixel_features: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
        """pixel_features: (B, H, W, hidden_size); masks: (B, H*s, W*s) or (B, H*s, W*s, 1) with s the total
        stride, already scaled as the tracker does (sigmoid or binarised, * scale + bias).
        Returns (features, position encoding), both (B, H, W, output_channels)."""
        if masks.ndim == 3:
            masks = masks[..., None]
        m = self.mask_downsampler(masks)
        if m.shape[1:3] != pixel_features.shape[1:3]:
            raise ValueError(f"mask grid {tuple(masks.shape[1:3])} downsampled to {tuple(m.shape[1:3])} does not "
                             f"match the pixel features' grid {tuple(pixel_features.shape[1:3])}")
        x = self.feature_projection(pixel_features) + m
        x = self.projection(self.memory_fuser(x))
        b, h, w, c = x.shape
        pos = jnp.broadcast_to(jnp.asarray(sine_position_encoding(h, w, c), x.dtype), (b, h, w, c))
        return x, pos
