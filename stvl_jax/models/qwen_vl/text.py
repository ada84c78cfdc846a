"""Text decoder of Qwen3-VL (Qwen3: QK-norm, interleaved M-RoPE) and Qwen2.5-VL (Qwen2: qkv bias, chunked
M-RoPE), with a static-shape KV cache for generation.

DeepStack (Qwen3-VL): per-token visual features, zero outside visual positions, are added to the hidden state
after decoder layers 0..k-1 — inside the one scan over all layers, selected by the layer index.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.qwen_vl.config import TextConfig
from stvl_jax.nn.attention import causal_padding_mask, dot_product_attention
from stvl_jax.nn.linear import Embed, Linear
from stvl_jax.nn.mlp import GatedMLP
from stvl_jax.nn.norms import RMSNorm
from stvl_jax.nn.rope import apply_rope, inv_frequencies, mrope_axis_map, mrope_cos_sin
from stvl_jax.nn.stack import make_stack, run_stack
from stvl_jax.sharding import constrain


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Per-layer keys/values for all layers, fixed capacity S.

    k, v: (layers, B, S, kv_heads, head_dim); valid: (B, S) bool, True where a real token was written;
    index: () int32, the next slot to write (all rows advance together; rows are left-padded).
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    index: jax.Array

    @staticmethod
    def init(config: TextConfig, batch: int, capacity: int, dtype=jnp.float32) -> "KVCache":
        shape = (config.num_hidden_layers, batch, capacity, config.num_key_value_heads, config.head_dim)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, capacity), bool),
                       jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


class TextAttention(nnx.Module):
    def __init__(self, c: TextConfig, *, dtype, param_dtype, precision=None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, init_std=c.initializer_range, rngs=rngs)
        h, kv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = Linear(c.hidden_size, (h, hd), in_axes=("embed",), out_axes=("heads", "head_dim"),
                             use_bias=c.attention_bias, **kw)
        self.k_proj = Linear(c.hidden_size, (kv, hd), in_axes=("embed",), out_axes=("kv_heads", "head_dim"),
                             use_bias=c.attention_bias, **kw)
        self.v_proj = Linear(c.hidden_size, (kv, hd), in_axes=("embed",), out_axes=("kv_heads", "head_dim"),
                             use_bias=c.attention_bias, **kw)
        self.o_proj = Linear((h, hd), c.hidden_size, in_axes=("heads", "head_dim"), out_axes=("embed",),
                             use_bias=False, **kw)
        if c.qk_norm:
            self.q_norm = RMSNorm(hd, eps=c.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
            self.k_norm = RMSNorm(hd, eps=c.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.qk_norm = c.qk_norm
        self.scale = hd**-0.5
        self.precision = precision

    def __call__(self, x, cos, sin, mask, cache_kv=None, cache_index=None):
        """x: (B, L, D); cos/sin: (B, L, hd); mask: (B, L, S) bool.
        cache_kv: (k, v) of this layer, (B, S, kv, hd) — written at cache_index, then attended."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, cos.astype(q.dtype), sin.astype(q.dtype))
        k = apply_rope(k, cos.astype(k.dtype), sin.astype(k.dtype))
        q = constrain(q, ("act_batch", "act_len", "act_heads", None))
        if cache_kv is not None:
            ck, cv = cache_kv
            ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, cache_index, 0, 0))
            cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, cache_index, 0, 0))
            k, v, cache_kv = ck.astype(q.dtype), cv.astype(q.dtype), (ck, cv)
        out = dot_product_attention(q, k, v, mask, scale=self.scale, precision=self.precision)
        return self.o_proj(out), cache_kv


class DecoderLayer(nnx.Module):
    def __init__(self, c: TextConfig, *, dtype, param_dtype, precision=None, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = TextAttention(c, dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, param_dtype=param_dtype,
                                                rngs=rngs)
        self.mlp = GatedMLP(c.hidden_size, c.intermediate_size, act=c.hidden_act, use_bias=False, dtype=dtype,
                            param_dtype=param_dtype, init_std=c.initializer_range, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache_kv=None, cache_index=None):
        h, cache_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_kv, cache_index)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return constrain(x, ("act_batch", "act_len", "act_embed")), cache_kv


class TextModel(nnx.Module):
    def __init__(self, c: TextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                 remat: str = "none", scan_layers: bool = True, rngs: nnx.Rngs):
        self.config = c
        self.dtype = dtype
        self.remat = remat
        self.scan_layers = scan_layers
        self.embed_tokens = Embed(c.vocab_size, c.hidden_size, dtype=dtype, param_dtype=param_dtype,
                                  precision=precision, init_std=c.initializer_range, rngs=rngs)
        self.layers = make_stack(
            lambda r: DecoderLayer(c, dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=r),
            c.num_hidden_layers, rngs)
        self.norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

    def rope(self, position_ids: jax.Array):
        c = self.config
        inv_freq = inv_frequencies(c.head_dim, c.rope_theta)
        axis_map = mrope_axis_map(c.head_dim // 2, c.mrope_section, c.mrope_interleaved)
        return mrope_cos_sin(position_ids, inv_freq, axis_map)

    def __call__(self, embeds, position_ids, attention_mask, deepstack=None, cache: KVCache | None = None):
        """embeds: (B, L, D); position_ids: (3, B, L); attention_mask: (B, L) (1 = real token);
        deepstack: (k, B, L, D) or None. Returns normed hidden states (B, L, D) and the updated cache."""
        bsz, length = embeds.shape[:2]
        x = constrain(embeds.astype(self.dtype), ("act_batch", "act_len", "act_embed"))
        cos, sin = self.rope(position_ids)
        attention_mask = attention_mask.astype(bool)
        if cache is None:
            pos = jnp.arange(length)
            mask = causal_padding_mask(pos, pos, attention_mask)
            index = None
        else:
            index = cache.index
            valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, index))
            mask = causal_padding_mask(index + jnp.arange(length), jnp.arange(cache.capacity), valid)

        n_layers = self.config.num_hidden_layers
        k_ds = 0 if deepstack is None else deepstack.shape[0]
        if k_ds > n_layers:
            raise ValueError(f"{k_ds} DeepStack features for {n_layers} decoder layers")

        def layer_fn(layer, h, xs):
            kv, i = xs
            h, kv = layer(h, cos, sin, mask, kv, index)
            if k_ds:
                # feature i after layer i < k: one scan over all layers with an index, not a scan per span (a span
                # slices the stacked weights, i.e. copies them, and its gradient pads them back)
                extra = jax.lax.dynamic_index_in_dim(deepstack, jnp.minimum(i, k_ds - 1), keepdims=False)
                h = h + jnp.where(i < k_ds, extra.astype(h.dtype), jnp.zeros((), h.dtype))
            return h, kv

        kv = None if cache is None else (cache.k, cache.v)
        x, kv = run_stack(self.layers, layer_fn, x, (kv, jnp.arange(n_layers)), remat=self.remat,
                          scan=self.scan_layers)
        x = self.norm(x)
        if cache is not None:
            cache = KVCache(kv[0], kv[1], valid, index + length)
        return x, cache
