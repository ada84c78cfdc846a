"""SAM2's two-way transformer (transformers `Sam2TwoWayTransformer`) and the small MLP heads of the mask decoder.

Sparse tokens (N, T, D) and image tokens (N, HW, D), N = images x prompt sets. Each layer: token self-attention
(the first layer without positional terms and without residual), tokens -> image cross-attention, token MLP,
image -> tokens cross-attention; post-norm (LayerNorm eps 1e-5, PyTorch's default, as the reference). A final
tokens -> image attention closes. Cross-attentions work at width D / attention_downsample_rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.sam2.config import MaskDecoderConfig
from stvl_jax.nn.attention import dot_product_attention
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import activation
from stvl_jax.nn.norms import LayerNorm

TORCH_LN_EPS = 1e-5  # nn.LayerNorm's default, which the reference's two-way blocks use


class FeedForward(nnx.Module):
    """proj_out(act(layer_{k}(... act(proj_in(x))))) with `num_layers` linears in all (transformers
    `Sam2FeedForward`); optional sigmoid on the output (the IoU head)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, num_layers: int, *, act: str = "relu",
                 sigmoid_output: bool = False, out_axis: str | None = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, precision=None, init_std: float = 0.02, rngs: nnx.Rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, precision=precision, init_std=init_std,
                  rngs=rngs)
        self.proj_in = Linear(n_in, hidden, in_axes=("embed",), out_axes=("mlp",), **kw)
        for j in range(num_layers - 2):
            setattr(self, f"layer_{j}", Linear(hidden, hidden, in_axes=(None,), out_axes=("mlp",), **kw))
        self.proj_out = Linear(hidden, n_out, in_axes=("mlp",), out_axes=(out_axis,), **kw)
        self.num_hidden = num_layers - 2
        self.act = act
        self.sigmoid_output = sigmoid_output

    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.act)
        x = act(self.proj_in(x))
        for j in range(self.num_hidden):
            x = act(getattr(self, f"layer_{j}")(x))
        x = self.proj_out(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


class Attention(nnx.Module):
    """Multi-head attention with q/k/v projected to D / downsample_rate (transformers `Sam2Attention`).
    q (N, Lq, D), k and v (N, Lk, D) -> (N, Lq, D)."""

    def __init__(self, dim: int, heads: int, downsample_rate: int = 1, *, dtype=jnp.float32, precision=None,
                 init_std: float = 0.02, rngs: nnx.Rngs):
        inner = dim // downsample_rate
        hd = inner // heads
        kw = dict(use_bias=True, dtype=dtype, precision=precision, init_std=init_std, rngs=rngs)
        proj = dict(in_axes=("embed",), out_axes=("heads", "head_dim"))
        self.q_proj = Linear(dim, (heads, hd), **proj, **kw)
        self.k_proj = Linear(dim, (heads, hd), **proj, **kw)
        self.v_proj = Linear(dim, (heads, hd), **proj, **kw)
        self.o_proj = Linear((heads, hd), dim, in_axes=("heads", "head_dim"), out_axes=("embed",), **kw)
        self.scale = hd ** -0.5
        self.precision = precision

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        out = dot_product_attention(self.q_proj(q), self.k_proj(k), self.v_proj(v), None, scale=self.scale,
                                    precision=self.precision)
        return self.o_proj(out)


class TwoWayBlock(nnx.Module):
    def __init__(self, config: MaskDecoderConfig, skip_first_layer_pe: bool, *, dtype, precision, rngs: nnx.Rngs):
        c, D = config, config.hidden_size
        kw = dict(dtype=dtype, precision=precision, rngs=rngs)
        self.self_attn = Attention(D, c.num_attention_heads, 1, **kw)
        self.cross_attn_token_to_image = Attention(D, c.num_attention_heads, c.attention_downsample_rate, **kw)
        self.cross_attn_image_to_token = Attention(D, c.num_attention_heads, c.attention_downsample_rate, **kw)
        # the reference ties this MLP's depth to the number of two-way layers
        self.mlp = FeedForward(D, c.mlp_dim, D, c.num_hidden_layers, out_axis="embed", **kw)
        for n in range(1, 5):
            setattr(self, f"layer_norm{n}", LayerNorm(D, eps=TORCH_LN_EPS, rngs=rngs))
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.layer_norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.layer_norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.layer_norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.layer_norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nnx.Module):
    """(tokens (N, T, D), image (N, HW, D), image_pe (N, HW, D)) -> (tokens, image), same shapes."""

    def __init__(self, config: MaskDecoderConfig, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        c = config
        for i in range(c.num_hidden_layers):
            setattr(self, f"layer_{i}", TwoWayBlock(c, i == 0, dtype=dtype, precision=precision, rngs=rngs))
        self.final_attn_token_to_image = Attention(c.hidden_size, c.num_attention_heads,
                                                   c.attention_downsample_rate, dtype=dtype, precision=precision,
                                                   rngs=rngs)
        self.layer_norm_final_attn = LayerNorm(c.hidden_size, eps=TORCH_LN_EPS, rngs=rngs)
        self.num_layers = c.num_hidden_layers

    def __call__(self, tokens: jax.Array, image: jax.Array, image_pe: jax.Array) -> tuple[jax.Array, jax.Array]:
        queries, keys = tokens, image
        for i in range(self.num_layers):
            queries, keys = getattr(self, f"layer_{i}")(queries, keys, tokens, image_pe)
        q, k = queries + tokens, keys + image_pe
        queries = self.layer_norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
