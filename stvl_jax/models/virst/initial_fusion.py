"""VIRST's initial fusion (upstream `InitialSegFusion`, model/seg_prompter.py): before the LLM, the [SEG] input
embeddings of each row attend to its video's SAM2 features and are updated through a learnable gate.

    SAM2 image embeddings (T, e, e, W) --down_layers x [conv 3x3 s2 + ReLU]--> (T, G, G, C) --LayerNorm-->
        --Linear C -> D_llm--> vision tokens (T*G*G, D_llm)
    fused = MHA(LN_q(seg), LN_kv(vision tokens))               8 heads upstream, width D_llm
    seg' = seg + gate * fused                                  gate: one learnable scalar, 0.1 at init

Off by default (`initial_fusion.enabled`), as in VIRST's released evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.virst.config import VirstConfig
from stvl_jax.models.virst.seg_prompter import SpatialDown, attend
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.params import param


class InitialFusion(nnx.Module):
    def __init__(self, cfg: VirstConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        f, p = cfg.initial_fusion, cfg.prompter
        d = cfg.llm.text.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = dict(eps=f.layer_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.spatial_down = SpatialDown(cfg.sam2_width, p.token_dim, p.down_layers, **kw)
        self.spatial_norm = LayerNorm(p.token_dim, axis_name="virst_embed", **norm)
        self.vision_proj = Linear(p.token_dim, d, in_axes=("virst_embed",), out_axes=("embed",), use_bias=True, **kw)
        self.norm_q = LayerNorm(d, axis_name="norm", **norm)
        self.norm_kv = LayerNorm(d, axis_name="norm", **norm)
        heads, hd = f.num_heads, d // f.num_heads
        lin = dict(use_bias=True, **kw)
        self.q_proj = Linear(d, (heads, hd), in_axes=("embed",), out_axes=("heads", "head_dim"), **lin)
        self.k_proj = Linear(d, (heads, hd), in_axes=("embed",), out_axes=("heads", "head_dim"), **lin)
        self.v_proj = Linear(d, (heads, hd), in_axes=("embed",), out_axes=("heads", "head_dim"), **lin)
        self.o_proj = Linear((heads, hd), d, in_axes=("heads", "head_dim"), out_axes=("embed",), **lin)
        self.gate = param(rngs, lambda key, shape, dtype: jnp.full(shape, f.gate_init, dtype), (), (), param_dtype)
        self.scale = hd ** -0.5
        self.dtype = dtype

    def vision_tokens(self, image_embeddings: jax.Array) -> jax.Array:
        """(T, e, e, W) -> (T * G * G, D_llm)."""
        x = self.spatial_down(image_embeddings.astype(self.dtype))
        return self.vision_proj(self.spatial_norm(x.reshape(-1, x.shape[-1])))

    def __call__(self, seg_embeds: jax.Array, image_embeddings: jax.Array) -> jax.Array:
        """seg_embeds (B, Q, D_llm): the [SEG] input embeddings of B rows about one video; image_embeddings
        (T, e, e, W) of that video -> updated embeddings (B, Q, D_llm)."""
        kv = self.norm_kv(self.vision_tokens(image_embeddings))[None]
        q = self.norm_q(seg_embeds)
        kv = jnp.broadcast_to(kv, (q.shape[0], *kv.shape[1:]))
        out, _ = attend(self.q_proj(q), self.k_proj(kv), self.v_proj(kv), None, self.scale, 0.0, None)
        fused = self.o_proj(out)
        return seg_embeds + self.gate[...].astype(fused.dtype) * fused
