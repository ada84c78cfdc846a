"""SAM2 memory encoder: fuses a frame's pixel features with its predicted mask into a spatial memory.

    mask (B, Hm, Wm) --downsampler (strided conv + LN + act, x log_s(total_stride)) + 1x1--> (B, H, W, C)
    pix  (B, H, W, C) --1x1 projection--> + mask --fuser (ConvNeXt blocks)--> 1x1 --> (B, H, W, mem_dim)
    position encoding: 2-D normalised sine table of the (H, W) grid, (B, H, W, mem_dim)

Channels-last throughout (HF/Meta are channels-first; the numbers are the same); convolutions are `nn.conv.Conv2d`
(kernels HWIO) and the position table is `position.sine_2d`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.sam2.memory_attention import SCAN_LAYERS
from stvl_jax.models.sam2.memory_config import MemoryEncoderConfig
from stvl_jax.models.sam2.position import sine_2d as sine_position_encoding
from stvl_jax.nn.conv import Conv2d
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import activation
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.params import param
from stvl_jax.nn.stack import make_stack, run_stack

_LN_EPS = 1e-6  # HF Sam2VideoLayerNorm / Meta LayerNorm2d


class _DownsampleLayer(nnx.Module):
    def __init__(self, cfg: MemoryEncoderConfig, in_ch: int, out_ch: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, cfg.downsampler_kernel_size, stride=cfg.downsampler_stride,
                           padding=cfg.downsampler_padding, in_axis="sam2_chans", out_axis="sam2_chans",
                           window_axis="sam2_window", dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layer_norm = LayerNorm(out_ch, eps=_LN_EPS, param_dtype=param_dtype, rngs=rngs)
        self.act = cfg.downsampler_act

    def __call__(self, x):
        return activation(self.act)(self.layer_norm(self.conv(x)))


class MaskDownSampler(nnx.Module):
    """(B, Hm, Wm, 1) mask -> (B, Hm / total_stride, Wm / total_stride, embed_dim); channels grow by stride^2
    per layer (1 -> 4 -> 16 -> 64 -> 256 for SAM2), then a 1x1 conv to embed_dim."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        conv_kw = dict(window_axis="sam2_window", **kw)
        ch = 1
        self.num_layers = cfg.num_downsampler_layers
        # one attribute per layer (their shapes differ, so no stack; no nnx.List: Orbax integer-key issue)
        for i in range(self.num_layers):
            out = ch * cfg.downsampler_stride ** 2
            setattr(self, f"layers_{i}", _DownsampleLayer(cfg, ch, out, **kw))
            ch = out
        self.final_conv = Conv2d(ch, cfg.downsampler_embed_dim, 1, in_axis="sam2_chans", out_axis="vis_embed",
                                 **conv_kw)

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
                                     in_axis="sam2_chans", out_axis="vis_embed", window_axis="sam2_window", **kw)
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
    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 scan_layers: bool = SCAN_LAYERS, rngs: nnx.Rngs):
        self.scan_layers = scan_layers
        self.layers = make_stack(lambda r: FuserBlock(cfg, dtype=dtype, param_dtype=param_dtype, rngs=r),
                                 cfg.fuser_num_layers, rngs)

    def __call__(self, x):
        x, _ = run_stack(self.layers, lambda layer, h, _: (layer(h), None), x, scan=self.scan_layers)
        return x


class MemoryEncoder(nnx.Module):
    """HF `Sam2VideoMemoryEncoder` / Meta `MemoryEncoder` (skip_mask_sigmoid: the caller scales the mask)."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 scan_layers: bool = SCAN_LAYERS, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        conv_kw = dict(window_axis="sam2_window", **kw)
        c = cfg.hidden_size
        self.config = cfg
        self.mask_downsampler = MaskDownSampler(cfg, **kw)
        self.feature_projection = Conv2d(c, c, 1, in_axis="vis_embed", out_axis="sam2_chans", **conv_kw)
        self.memory_fuser = MemoryFuser(cfg, scan_layers=scan_layers, **kw)
        self.projection = Conv2d(c, cfg.output_channels, 1, in_axis="vis_embed", out_axis="sam2_mem", **conv_kw)

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
