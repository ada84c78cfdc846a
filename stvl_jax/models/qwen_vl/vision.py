"""Vision towers of Qwen3-VL and Qwen2.5-VL (one module, family switches where they differ).

                      Qwen3-VL                               Qwen2.5-VL
patch embed           Conv3d with bias                       Conv3d without bias
position              learned table, bilinear resample + 2-D RoPE   2-D RoPE only
block norm / MLP      LayerNorm, fc1-gelu(tanh)-fc2           RMSNorm, SwiGLU with bias
attention segments    each temporal patch                     windows; full (per frame) at fullatt indexes
merger                LN(1152)->4x->GELU->out; DeepStack mergers (LN after the 2x2 shuffle) on tapped blocks
                                                             RMSNorm->4x->GELU->out, then undo window order

The Conv3d with stride == kernel is a matmul over flattened (C, T, P, P) patches; its kernel is stored as
(C*T*P*P, hidden) and the converter reshapes PyTorch's (hidden, C, T, P, P).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.vision_inputs import VisionInputs
from stvl_jax.nn.attention import SegmentLayout, segment_attention
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import MLP, GatedMLP
from stvl_jax.nn.norms import LayerNorm, RMSNorm
from stvl_jax.nn.params import normal, param
from stvl_jax.nn.rope import apply_rope, vision_rope_cos_sin
from stvl_jax.nn.stack import make_stack, run_stack
from stvl_jax.sharding import constrain


def gather_frame_rows(frames: jax.Array, offsets: jax.Array, line_stride: jax.Array, patch: int,
                      channels: int) -> jax.Array:
    """Flat frame bytes (S,) uint8 -> channels-last patch rows (N, T*P*P, C): row n's temporal slot k is the
    P x P patch whose top-left pixel is at byte offsets[n, k], lines line_stride[n] bytes apart
    (`vision_inputs.frame_offsets`). The host ships decoded frames as they are; patchifying is this gather."""
    p, c = jnp.arange(patch, dtype=jnp.int32), jnp.arange(channels, dtype=jnp.int32)
    within = p[None, :, None, None] * line_stride[:, None, None, None] + p[None, None, :, None] * channels + c
    idx = offsets[:, :, None, None, None] + within[:, None]  # (N, T, P, P, C)
    n, t = offsets.shape
    return jnp.take(frames, idx, mode="clip").reshape(n, t * patch * patch, channels)


class VisionAttention(nnx.Module):
    def __init__(self, dim: int, num_heads: int, *, dtype, param_dtype, init_std: float, precision=None,
                 rngs: nnx.Rngs):
        hd = dim // num_heads
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, precision=precision, init_std=init_std,
                  rngs=rngs)
        self.q_proj = Linear(dim, (num_heads, hd), in_axes=("vis_embed",), out_axes=("vis_heads", "head_dim"), **kw)
        self.k_proj = Linear(dim, (num_heads, hd), in_axes=("vis_embed",), out_axes=("vis_heads", "head_dim"), **kw)
        self.v_proj = Linear(dim, (num_heads, hd), in_axes=("vis_embed",), out_axes=("vis_heads", "head_dim"), **kw)
        self.proj = Linear((num_heads, hd), dim, in_axes=("vis_heads", "head_dim"), out_axes=("vis_embed",), **kw)
        self.scale = hd**-0.5
        self.precision = precision

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, layout: SegmentLayout) -> jax.Array:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (N, H, hd)
        q = apply_rope(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rope(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        out = segment_attention(q, k, v, layout, scale=self.scale, precision=self.precision)
        return self.proj(out)


class VisionBlock(nnx.Module):
    def __init__(self, config: QwenVLConfig, *, dtype, param_dtype, precision=None, rngs: nnx.Rngs):
        vc = config.vision
        kw = dict(dtype=dtype, param_dtype=param_dtype, init_std=vc.initializer_range, rngs=rngs)
        if config.family == "qwen3_vl":
            self.norm1 = LayerNorm(vc.hidden_size, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
            self.norm2 = LayerNorm(vc.hidden_size, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
            self.mlp = MLP(vc.hidden_size, vc.intermediate_size, act=vc.hidden_act, use_bias=True,
                           in_axis="vis_embed", mlp_axis="vis_mlp", **kw)
        else:
            self.norm1 = RMSNorm(vc.hidden_size, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
            self.norm2 = RMSNorm(vc.hidden_size, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
            self.mlp = GatedMLP(vc.hidden_size, vc.intermediate_size, act=vc.hidden_act, use_bias=True,
                                embed_axis="vis_embed", mlp_axis="vis_mlp", **kw)
        self.attn = VisionAttention(vc.hidden_size, vc.num_heads, precision=precision, **kw)

    def __call__(self, x, cos, sin, layout: SegmentLayout):
        x = x + self.attn(self.norm1(x), cos, sin, layout)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """Merge each 2x2 block of patches into one LLM token: norm -> (4*dim) -> fc1 -> GELU -> fc2."""

    def __init__(self, config: QwenVLConfig, *, postshuffle_norm: bool, dtype, param_dtype, rngs: nnx.Rngs):
        vc = config.vision
        self.merged_dim = vc.hidden_size * vc.merge_unit
        norm_dim = self.merged_dim if postshuffle_norm else vc.hidden_size
        if config.family == "qwen3_vl":
            self.norm = LayerNorm(norm_dim, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
        else:
            self.norm = RMSNorm(norm_dim, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
        self.postshuffle_norm = postshuffle_norm
        self.mlp = MLP(self.merged_dim, self.merged_dim, vc.out_hidden_size, act="gelu", use_bias=True,
                       in_axis="vis_merge", mlp_axis="vis_mlp", out_axis="embed", dtype=dtype,
                       param_dtype=param_dtype, init_std=vc.initializer_range, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, hidden) -> (N / merge^2, out_hidden)."""
        if self.postshuffle_norm:
            x = self.norm(x.reshape(-1, self.merged_dim))
        else:
            x = self.norm(x).reshape(-1, self.merged_dim)
        return self.mlp(x)


class VisionTower(nnx.Module):
    def __init__(self, config: QwenVLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                 remat: str = "none", scan_layers: bool = True, pixel_mean_std=None, rngs: nnx.Rngs):
        """pixel_mean_std: ((mean,)*3, (std,)*3) for integer pixel values (the checkpoint's preprocessing;
        None: the family default)."""
        vc = config.vision
        self.config = config
        if pixel_mean_std is None:
            pre = config.default_preprocessing()
            pixel_mean_std = (pre.image_mean, pre.image_std)
        self.pixel_mean_std = tuple(tuple(float(x) for x in v) for v in pixel_mean_std)
        self.dtype = dtype
        self.remat = remat
        self.scan_layers = scan_layers
        qwen3 = config.family == "qwen3_vl"
        self.patch_embed = Linear(vc.patch_dim, vc.hidden_size, in_axes=("conv_in",), out_axes=("vis_embed",),
                                  use_bias=qwen3, dtype=dtype, param_dtype=param_dtype, precision=precision,
                                  init_std=vc.initializer_range, rngs=rngs)
        if qwen3:
            self.pos_embed = param(rngs, normal(vc.initializer_range), (vc.num_position_embeddings, vc.hidden_size),
                                   ("pos_table", "vis_embed"), param_dtype)
        self.blocks = make_stack(
            lambda r: VisionBlock(config, dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=r),
            vc.depth, rngs)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.merger = PatchMerger(config, postshuffle_norm=False, **kw)
        # Separate attributes, not an nnx.List: integer-keyed lists break Orbax restores.
        for i in range(len(vc.deepstack_visual_indexes)):
            setattr(self, f"deepstack_merger_{i}", PatchMerger(config, postshuffle_norm=True, **kw))

    def _normalized_pixels(self, pv: jax.Array) -> jax.Array:
        """Integer (uint8) pixel rows -> float32 normalized exactly as the HF processor does: rescale
        (`float64(v) * (1/255)` -> float32), then `(x - mean_c) / std_c` in float32, as one per-channel table of
        the 256 values (channel of row element j = j // (T*P*P)). Channels-last rows (N, T*P*P, C) are
        normalized per channel, then permuted to the HF layout (N, C*T*P*P). Float rows are already normalized."""
        if not jnp.issubdtype(pv.dtype, jnp.integer):
            return pv
        mean, std = (np.asarray(v, np.float32)[:, None] for v in self.pixel_mean_std)
        table = jnp.asarray(((np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)[None] - mean) / std)
        vc = self.config.vision
        if pv.ndim == 3:
            x = table[np.arange(vc.in_channels), pv.astype(jnp.int32)]  # (N, T*P*P, C)
            return jnp.swapaxes(x, 1, 2).reshape(pv.shape[0], vc.patch_dim)
        channel = np.arange(vc.patch_dim) // (vc.patch_dim // vc.in_channels)
        return table[channel[None, :], pv.astype(jnp.int32)]

    def __call__(self, inputs: VisionInputs) -> tuple[jax.Array, list[jax.Array]]:
        """Returns merged tokens (M, out_hidden) in processing order (`inputs.merged_order` maps image-then-video
        order to it), and one (M, out_hidden) DeepStack feature per tapped block (Qwen3-VL)."""
        vc = self.config.vision
        pv = inputs.pixel_values
        if inputs.frame_offsets is not None:  # whole frames: patchify on the device
            pv = gather_frame_rows(pv, inputs.frame_offsets, inputs.line_stride, vc.patch_size, vc.in_channels)
        x = self.patch_embed(self._normalized_pixels(pv))  # (N, hidden)
        if inputs.interp_index is not None:
            table = self.pos_embed[...].astype(jnp.float32)
            pos = jnp.sum(table[inputs.interp_index] * inputs.interp_weight[..., None], axis=1)
            x = x + pos.astype(x.dtype)
        x = constrain(x, ("vis_patch", "act_embed"))
        cos, sin = vision_rope_cos_sin(inputs.pos_hw, vc.head_dim, vc.rope_theta)

        if self.config.family == "qwen2_5_vl":
            full = jnp.asarray([i in vc.fullatt_block_indexes for i in range(vc.depth)])

            def block_fn(block, h, is_full):
                # window and frame layouts have different shapes, so select the branch rather than the data
                h = jax.lax.cond(is_full, lambda: block(h, cos, sin, inputs.frame_layout),
                                 lambda: block(h, cos, sin, inputs.window_layout))
                return h, None

            x, _ = run_stack(self.blocks, block_fn, x, full, remat=self.remat, scan=self.scan_layers)
            features = []
        else:
            # One scan over all blocks (a scan per span between taps would slice, i.e. copy, the stacked weights);
            # a tapped block's output is written into its slot of a (taps, N, hidden) carry, in block order.
            taps = sorted(vc.deepstack_visual_indexes)
            tap_slot = np.full(vc.depth, -1, np.int32)
            tap_slot[taps] = np.arange(len(taps))

            def block_fn(block, carry, slot):
                h, tapped = carry
                h = block(h, cos, sin, inputs.frame_layout)
                if taps:
                    tapped = jax.lax.cond(
                        slot >= 0, lambda t: jax.lax.dynamic_update_index_in_dim(t, h, jnp.maximum(slot, 0), 0),
                        lambda t: t, tapped)
                return (h, tapped), None

            tapped = jnp.zeros((len(taps), *x.shape), x.dtype) if taps else None
            (x, tapped), _ = run_stack(self.blocks, block_fn, (x, tapped), jnp.asarray(tap_slot), remat=self.remat,
                                         scan=self.scan_layers)
            # merger i belongs to deepstack_visual_indexes[i] (as in HF); features come out in block order
            features = [getattr(self, f"deepstack_merger_{vc.deepstack_visual_indexes.index(tap)}")(tapped[j])
                        for j, tap in enumerate(taps)]

        return self.merger(x), features

