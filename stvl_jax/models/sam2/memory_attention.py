"""SAM2 memory attention: conditions the current frame's features on the memory bank.

Per layer (pre-norm): self-attention over the frame's tokens, cross-attention to the memory (keys = memory +
memory position encoding, values = memory), ReLU MLP. Queries and keys carry 2-D axial RoPE (`rope_axial`);
the memory's spatial tokens (S frames of the same grid) reuse the grid's table S times, and its trailing
`num_k_exclude_rope` object-pointer tokens get none. HF `Sam2VideoMemoryAttention`, Meta `MemoryAttention`.

Static shapes: a fixed-capacity memory bank passes all its slots and a `memory_mask` (True = a real memory
token); masked keys get zero attention weight, which is attention over the real tokens only.
Dropout (training, as SAM2 trains: `dropout` on the residual branches and inside the MLP, `rope_dropout` on the
attention weights) applies only when a `dropout_rng` is given; without one the forward is the inference one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.sam2.memory_config import MemoryAttentionConfig
from stvl_jax.models.sam2.rope_axial import apply_axial_rope, axial_rope_cos_sin
from stvl_jax.nn.attention import dot_product_attention
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.mlp import activation
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.stack import make_stack, run_stack

_LN_EPS = 1e-5  # torch nn.LayerNorm default, as in HF and Meta
SCAN_LAYERS = True  # default of `scan_layers` here and in the memory encoder (research/notes/sam2_speed.md)


def _dropout(x, rate: float, rng):
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _attention_with_dropout(q, k, v, mask, scale: float, rate: float, rng):
    """softmax(q k^T * scale) with dropout on the weights, then @ v. q (B, Lq, H, D); k, v (B, Lk, H, D);
    mask (B, 1, Lk) or None. The training path; inference uses the fused `dot_product_attention`."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
    weights = _dropout(jax.nn.softmax(logits, axis=-1), rate, rng)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32
                      ).astype(q.dtype)


class RoPEAttention(nnx.Module):
    """Multi-head attention with axial RoPE on q and the first Lk - num_k_exclude_rope keys."""

    def __init__(self, cfg: MemoryAttentionConfig, kv_in_dim: int, *, kv_axis: str, rope_k_repeat: bool,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        heads = ("vis_heads", "head_dim")
        self.q_proj = Linear(d, (h, hd), in_axes=("vis_embed",), out_axes=heads, **kw)
        self.k_proj = Linear(kv_in_dim, (h, hd), in_axes=(kv_axis,), out_axes=heads, **kw)
        self.v_proj = Linear(kv_in_dim, (h, hd), in_axes=(kv_axis,), out_axes=heads, **kw)
        self.o_proj = Linear((h, hd), d, in_axes=heads, out_axes=("vis_embed",), **kw)
        self.rope_k_repeat = rope_k_repeat
        self.scale = hd ** -0.5
        self.dropout_rate = cfg.rope_dropout

    def __call__(self, query, key, value, cos, sin, *, num_k_exclude_rope: int = 0, key_mask=None,
                 dropout_rng=None):
        """query (B, Lq, D); key, value (B, Lk, kv_in); cos, sin (Lq, head_dim); key_mask (B, Lk) bool or None;
        dropout_rng: dropout on the attention weights (training) when given."""
        q = apply_axial_rope(self.q_proj(query), cos, sin)
        k, v = self.k_proj(key), self.v_proj(value)
        n_rot = k.shape[1] - num_k_exclude_rope
        if n_rot < 0:
            raise ValueError(f"num_k_exclude_rope {num_k_exclude_rope} exceeds the {k.shape[1]} keys")
        if n_rot:
            cos_k, sin_k = cos, sin
            if n_rot != q.shape[1]:
                if not self.rope_k_repeat or n_rot % q.shape[1]:
                    raise ValueError(f"{n_rot} RoPE keys are not {'a multiple of ' if self.rope_k_repeat else ''}"
                                     f"the {q.shape[1]} queries' grid")
                reps = n_rot // q.shape[1]  # S memory frames of the same grid: the table tiled frame-major
                cos_k, sin_k = jnp.tile(jnp.asarray(cos), (reps, 1)), jnp.tile(jnp.asarray(sin), (reps, 1))
            k = jnp.concatenate([apply_axial_rope(k[:, :n_rot], cos_k, sin_k), k[:, n_rot:]], axis=1)
        mask = None if key_mask is None else key_mask[:, None, :]
        if dropout_rng is None:
            out = dot_product_attention(q, k, v, mask, scale=self.scale)
        else:
            out = _attention_with_dropout(q, k, v, mask, self.scale, self.dropout_rate, dropout_rng)
        return self.o_proj(out)


class MemoryAttentionLayer(nnx.Module):
    def __init__(self, cfg: MemoryAttentionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d = cfg.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = RoPEAttention(cfg, d, kv_axis="vis_embed", rope_k_repeat=False, **kw)
        self.cross_attn_image = RoPEAttention(cfg, cfg.kv_in_dim, kv_axis="sam2_mem", rope_k_repeat=True, **kw)
        self.linear1 = Linear(d, cfg.ffn_hidden_size, in_axes=("vis_embed",), out_axes=("vis_mlp",), use_bias=True,
                              **kw)
        self.linear2 = Linear(cfg.ffn_hidden_size, d, in_axes=("vis_mlp",), out_axes=("vis_embed",), use_bias=True,
                              **kw)
        for i in (1, 2, 3):
            setattr(self, f"layer_norm{i}", LayerNorm(d, eps=_LN_EPS, param_dtype=param_dtype, rngs=rngs))
        self.act = cfg.ffn_act
        self.dropout_rate = cfg.dropout

    def __call__(self, x, memory, memory_keys, cos, sin, num_k_exclude_rope, memory_mask, rng=None):
        r = [None] * 6 if rng is None else list(jax.random.split(rng, 6))
        p = self.dropout_rate
        h = self.layer_norm1(x)
        x = x + _dropout(self.self_attn(h, h, h, cos, sin, dropout_rng=r[0]), p, r[1])
        h = self.layer_norm2(x)
        h = self.cross_attn_image(h, memory_keys, memory, cos, sin, num_k_exclude_rope=num_k_exclude_rope,
                                  key_mask=memory_mask, dropout_rng=r[2])
        x = x + _dropout(h, p, r[3])
        h = self.layer_norm3(x)
        return x + _dropout(self.linear2(_dropout(activation(self.act)(self.linear1(h)), p, r[4])), p, r[5])


class MemoryAttention(nnx.Module):
    """scan_layers: run the layers as one `lax.scan` (False: unrolled; same parameters and numbers)."""

    def __init__(self, cfg: MemoryAttentionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 scan_layers: bool = SCAN_LAYERS, rngs: nnx.Rngs):
        self.config = cfg
        self.dtype = dtype
        self.scan_layers = scan_layers
        self.layers = make_stack(lambda r: MemoryAttentionLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=r),
                                 cfg.num_layers, rngs)
        self.layer_norm = LayerNorm(cfg.hidden_size, eps=_LN_EPS, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, features: jax.Array, memory: jax.Array, features_pos: jax.Array | None,
                 memory_pos: jax.Array, *, num_object_pointer_tokens: int = 0,
                 memory_mask: jax.Array | None = None, dropout_rng: jax.Array | None = None) -> jax.Array:
        """features (B, N, hidden) with N = width * height of `rope_feat_sizes` (row-major grid);
        features_pos (B, N, hidden) or None; memory, memory_pos (B, M, kv_in_dim): S spatial memories of N
        tokens each, frame-major, then `num_object_pointer_tokens` (static) pointer tokens;
        memory_mask (B, M) bool, True = real token (None: all real); dropout_rng: a key to train with dropout.
        Returns (B, N, hidden)."""
        cfg = self.config
        cos, sin = axial_rope_cos_sin(cfg.rope_feat_sizes, cfg.head_dim, cfg.rope_theta)
        if features.shape[1] != cos.shape[0]:
            raise ValueError(f"memory attention: {features.shape[1]} feature tokens, but rope_feat_sizes "
                             f"{tuple(cfg.rope_feat_sizes)} is a grid of {cos.shape[0]}")
        if memory.shape != memory_pos.shape:
            raise ValueError(f"memory {tuple(memory.shape)} and memory_pos {tuple(memory_pos.shape)} differ")
        x = features if features_pos is None else features + 0.1 * features_pos
        x = x.astype(self.dtype)  # the residual stream runs in the compute dtype
        memory_keys = (memory + memory_pos).astype(self.dtype)
        memory = memory.astype(self.dtype)

        def body(layer, h, rng):
            return layer(h, memory, memory_keys, cos, sin, num_object_pointer_tokens, memory_mask, rng), None

        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, cfg.num_layers)
        x, _ = run_stack(self.layers, body, x, rngs, scan=self.scan_layers)
        return self.layer_norm(x)
