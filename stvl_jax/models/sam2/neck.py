"""FPN neck of SAM2's image encoder and the vision encoder (Hiera + neck), transformers `Sam2VisionModel`.

Each stage map gets a lateral conv to `fpn_hidden_size`; from the coarsest stage down, stages listed in
`fpn_top_down_levels` add the 2x nearest-upsampled previous level. Every level gets the DETR-style normalised
sine position encoding (`position.sine_2d`; used by memory attention in video). The encoder returns the
`num_feature_levels` finest levels, finest first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.sam2.config import VisionConfig
from stvl_jax.models.sam2.hiera import Hiera
from stvl_jax.models.sam2.position import sine_2d
from stvl_jax.nn.conv import Conv2d


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 2H, 2W, C)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class FpnNeck(nnx.Module):
    """Stage maps (finest first) -> (FPN levels, their position encodings), both finest first; every level
    (B, h_s, w_s, fpn_hidden_size)."""

    def __init__(self, config: VisionConfig, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        # conv_{k} is HF `convs.{k}`: k = 0 is the coarsest stage (backbone_channel_list runs last to first)
        for k, channels in enumerate(config.backbone_channel_list):
            setattr(self, f"conv_{k}", Conv2d(channels, config.fpn_hidden_size, config.fpn_kernel_size,
                                              stride=config.fpn_stride, padding=config.fpn_padding,
                                              in_axis="vis_embed", out_axis=None, dtype=dtype, precision=precision,
                                              init_std=config.initializer_range, rngs=rngs))
        self.num_convs = len(config.backbone_channel_list)
        self.top_down_levels = tuple(config.fpn_top_down_levels)
        self.hidden = config.fpn_hidden_size

    def __call__(self, stages: tuple[jax.Array, ...]) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        n = self.num_convs - 1
        levels, pos = [], []
        prev = None
        for i in range(n, -1, -1):  # coarse to fine
            lateral = getattr(self, f"conv_{n - i}")(stages[i])
            if i in self.top_down_levels and i != n:
                top_down = upsample_nearest_2x(prev.astype(jnp.float32)).astype(lateral.dtype)
                prev = lateral + top_down
            else:
                prev = lateral
            b, h, w, _ = prev.shape
            enc = jnp.asarray(sine_2d(h, w, self.hidden), prev.dtype)
            levels.append(prev)
            pos.append(jnp.broadcast_to(enc, (b, h, w, self.hidden)))
        return tuple(levels[::-1]), tuple(pos[::-1])


class VisionEncoder(nnx.Module):
    """pixel_values (B, H, W, 3) channels-last -> (fpn levels, position encodings), the `num_feature_levels`
    finest levels, finest first, each (B, h, w, fpn_hidden_size); also the last stage map (B, h, w, C_last)."""

    def __init__(self, config: VisionConfig, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        self.backbone = Hiera(config.backbone, dtype=dtype, precision=precision, rngs=rngs)
        self.neck = FpnNeck(config, dtype=dtype, precision=precision, rngs=rngs)
        self.num_feature_levels = config.num_feature_levels

    def __call__(self, pixel_values: jax.Array):
        stages = self.backbone(pixel_values)
        levels, pos = self.neck(stages)
        k = self.num_feature_levels
        return levels[:k], pos[:k], stages[-1]
