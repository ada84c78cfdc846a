"""VIRST's SegPrompter (upstream `SegPrompter` / `RoPEDecoderLayer` / `RotaryMHA` in model/seg_prompter.py): the
second spatio-temporal fusion, after the LLM, that turns each object's [SEG] hidden states into per-frame SAM2
prompts.

    seg hidden (B, Q, D_llm) --seg_proj--> (B, Q, C) --expand over T frames, q-major--> queries (B, Q*T, C)
    SAM2 image embeddings (T, e, e, W) --down_layers x [conv 3x3 s2 + ReLU]--> (T, G, G, C) --LayerNorm-->
        memory (T*G*G, C), (t, y, x) row-major
    num_layers x post-norm decoder layer:
        x = LN(x + drop(SelfAttn(x)))                       over the Q*T queries of one object
        x = LN(x + drop(CrossAttn3DRoPE(x, memory)))         keys rotated by (t, y, x), queries by t only
        x = LN(x + drop(FFN(x)))                             C -> ffn_dim -> C, exact GELU
    -> prompts (B, T, Q, C) and frame scores (B, T)

B = objects (upstream runs one conversation at a time with batch 1: its `N` is our Q, the 10 [SEG] tokens of
one expression, which together prompt ONE object). The frame score is the last cross-attention's weights
averaged over heads, queries and grid cells (before attention dropout; upstream averages the dropped-out weights,
the same at evaluation). C = SAM2's prompt width (256), G = 8, Q = 10 upstream.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.sam2.memory_attention import _dropout
from stvl_jax.models.virst.config import VirstConfig
from stvl_jax.models.virst.rope3d import apply_pair_rotation, key_angles, query_angles
from stvl_jax.nn.conv import Conv2d
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import MLP
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.stack import make_stack, run_stack

_MASK = float(np.finfo(np.float32).min)
HEADS = ("virst_heads", "head_dim")


class SpatialDown(nnx.Module):
    """`num_layers` x [Conv2d 3x3 stride 2 pad 1 + ReLU] (in -> out, then out -> out): (N, e, e, in) ->
    (N, e / 2^n, e / 2^n, out). Upstream `spatial_down` (nn.Sequential: conv at 0, 2, 4)."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        # one attribute per conv (conv0, conv1, ...), not an nnx.List: integer keys break Orbax restores
        self.num_layers = num_layers
        for i in range(num_layers):
            setattr(self, f"conv{i}", Conv2d(in_dim if i == 0 else out_dim, out_dim, 3, stride=2, padding=1,
                                             in_axis="virst_embed", out_axis="virst_embed",
                                             window_axis="sam2_window", dtype=dtype, param_dtype=param_dtype,
                                             rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            x = jax.nn.relu(getattr(self, f"conv{i}")(x))
        return x


def attend(q, k, v, key_mask, scale: float, rate: float, rng):
    """q (B, Lq, H, d), k/v (B, Lk, H, d), key_mask (B, Lk) bool or None -> (out (B, Lq, H, d), weights before
    dropout (B, H, Lq, Lk) fp32)."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, _MASK)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", _dropout(weights, rate, rng).astype(v.dtype), v,
                     preferred_element_type=jnp.float32)
    return out.astype(q.dtype), weights


class Attention(nnx.Module):
    """Multi-head attention with biased q/k/v/o projections (torch `nn.MultiheadAttention`'s math; its packed
    `in_proj_weight` is split into q/k/v on import). Optional pair-rotation angles for q and k (3D RoPE)."""

    def __init__(self, dim: int, num_heads: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        hd = dim // num_heads
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(dim, (num_heads, hd), in_axes=("virst_embed",), out_axes=HEADS, **kw)
        self.k_proj = Linear(dim, (num_heads, hd), in_axes=("virst_embed",), out_axes=HEADS, **kw)
        self.v_proj = Linear(dim, (num_heads, hd), in_axes=("virst_embed",), out_axes=HEADS, **kw)
        self.o_proj = Linear((num_heads, hd), dim, in_axes=HEADS, out_axes=("virst_embed",), **kw)
        self.scale = 1.0 / math.sqrt(hd)

    def __call__(self, x, memory, *, key_mask=None, q_angles=None, k_angles=None, rate: float = 0.0, rng=None):
        q, k, v = self.q_proj(x), self.k_proj(memory), self.v_proj(memory)
        if q_angles is not None:
            q = apply_pair_rotation(q, q_angles)
        if k_angles is not None:
            k = apply_pair_rotation(k, k_angles)
        out, weights = attend(q, k, v, key_mask, self.scale, rate, rng)
        return self.o_proj(out), weights


class DecoderLayer(nnx.Module):
    """Upstream `RoPEDecoderLayer`: post-norm self-attention, 3D-RoPE cross-attention, GELU FFN."""

    def __init__(self, cfg: VirstConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        p = cfg.prompter
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = Attention(p.token_dim, p.num_heads, **kw)
        self.cross_attn = Attention(p.token_dim, p.num_heads, **kw)
        self.ff = MLP(p.token_dim, p.ffn_dim, act="gelu", in_axis="virst_embed", mlp_axis="virst_mlp", **kw)
        norm = dict(eps=p.layer_norm_eps, axis_name="virst_embed", param_dtype=param_dtype, rngs=rngs)
        self.norm1, self.norm2, self.norm3 = LayerNorm(p.token_dim, **norm), LayerNorm(p.token_dim, **norm), \
            LayerNorm(p.token_dim, **norm)
        self.rate = p.dropout

    def __call__(self, x, memory, query_mask, q_angles, k_angles, rng):
        r = [None] * 5 if rng is None else list(jax.random.split(rng, 5))
        sa, _ = self.self_attn(x, x, key_mask=query_mask, rate=self.rate, rng=r[0])
        x = self.norm1(x + _dropout(sa, self.rate, r[1]))
        ca, weights = self.cross_attn(x, memory, q_angles=q_angles, k_angles=k_angles, rate=self.rate, rng=r[2])
        x = self.norm2(x + _dropout(ca, self.rate, r[3]))
        return self.norm3(x + _dropout(self.ff(x), self.rate, r[4])), weights


class SegPrompter(nnx.Module):
    def __init__(self, cfg: VirstConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        p = cfg.prompter
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = cfg
        self.dtype = dtype
        self.spatial_down = SpatialDown(cfg.sam2_width, p.token_dim, p.down_layers, **kw)
        self.memory_norm = LayerNorm(p.token_dim, eps=p.layer_norm_eps, axis_name="virst_embed",
                                     param_dtype=param_dtype, rngs=rngs)
        self.seg_proj = Linear(cfg.llm.text.hidden_size, p.token_dim, in_axes=("embed",),
                               out_axes=("virst_embed",), use_bias=True, **kw)
        self.layers = make_stack(lambda r: DecoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=r),
                                 p.num_layers, rngs)

    def memory(self, image_embeddings: jax.Array) -> jax.Array:
        """SAM2 image embeddings (T, e, e, W) channels-last -> memory (T * G * G, C), (t, y, x) row-major."""
        x = self.spatial_down(image_embeddings.astype(self.dtype))
        return self.memory_norm(x.reshape(-1, x.shape[-1]))

    def __call__(self, seg_hidden: jax.Array, image_embeddings: jax.Array, query_mask: jax.Array | None = None,
                 *, dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """seg_hidden (B, Q, D_llm): the LLM's last-layer hidden states at each object's Q [SEG] positions;
        image_embeddings (T, e, e, W): SAM2's image embeddings of the T segmentation frames (shared by the B
        objects of one video); query_mask (B, Q) bool, True = a real [SEG] (None: all real); dropout_rng: a key
        to train with dropout. -> (prompts (B, T, Q, C), frame_scores (B, T))."""
        p, cfg = self.config.prompter, self.config
        b, q = seg_hidden.shape[:2]
        t = image_embeddings.shape[0]
        if t > p.max_frames:
            raise InputError(f"SegPrompter: {t} segmentation frames exceed prompter.max_frames {p.max_frames}")
        if image_embeddings.shape[1:3] != (cfg.sam2_grid, cfg.sam2_grid):
            raise InputError(f"SegPrompter: SAM2 image embeddings of shape {tuple(image_embeddings.shape)}; "
                             f"expected (T, {cfg.sam2_grid}, {cfg.sam2_grid}, {cfg.sam2_width})")
        memory = self.memory(image_embeddings)
        g2 = cfg.memory_grid ** 2
        memory = jnp.broadcast_to(memory[None], (b, *memory.shape))
        x = self.seg_proj(seg_hidden)  # (B, Q, C)
        x = jnp.broadcast_to(x[:, :, None], (b, q, t, x.shape[-1])).reshape(b, q * t, -1)  # q-major
        mask = None if query_mask is None else jnp.repeat(query_mask.astype(bool), t, axis=1)
        q_ang = jnp.asarray(query_angles(q, t, p.head_dim, p.rope_theta))
        k_ang = jnp.asarray(key_angles(t, cfg.memory_grid, p.head_dim, p.rope_theta))

        def body(layer, h, rng):
            h, weights = layer(h, memory, mask, q_ang, k_ang, rng)
            return h, weights

        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, p.num_layers)
        x, weights = run_stack(self.layers, body, x, rngs)
        last = weights[-1]  # (B, H, Q*T, T*G2)
        if mask is not None:  # average over real queries only
            w = mask[:, None, :, None].astype(last.dtype)
            last = (last * w).sum(2, keepdims=True) / jnp.maximum(w.sum(2, keepdims=True), 1)
        frame_scores = last.reshape(*last.shape[:-1], t, g2).mean(axis=(1, 2, 4))
        prompts = x.reshape(b, q, t, -1).transpose(0, 2, 1, 3)
        return prompts, frame_scores
