"""bf16 compute (fp32 parameters): memory encoder and memory attention run and stay close to fp32."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters.sam2_video_keys import memory_attention_keys, memory_encoder_keys
from stvl_jax.models.sam2.memory_attention import MemoryAttention
from stvl_jax.models.sam2.memory_config import MemoryAttentionConfig, MemoryEncoderConfig
from stvl_jax.models.sam2.memory_encoder import MemoryEncoder
from sam2_memory_helpers import jitted, random_loaded


def _rel(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.abs(a - b).max() / np.abs(b).max()


def test_bf16_compute_close_to_fp32():
    att_cfg = MemoryAttentionConfig(hidden_size=64, num_layers=2, num_heads=2, ffn_hidden_size=64,
                                    rope_feat_sizes=(4, 4))
    enc_cfg = MemoryEncoderConfig(hidden_size=64, downsampler_embed_dim=64, fuser_embed_dim=64,
                                  fuser_intermediate_dim=128, downsampler_total_stride=4)
    outs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        att = random_loaded(lambda: MemoryAttention(att_cfg, dtype=dtype, rngs=nnx.Rngs(0)),
                            memory_attention_keys(att_cfg, "", ""), 0)
        enc = random_loaded(lambda: MemoryEncoder(enc_cfg, dtype=dtype, rngs=nnx.Rngs(0)),
                            memory_encoder_keys(enc_cfg, "", ""), 1)
        r = np.random.default_rng(1)
        feats, pos = (r.normal(size=(2, 16, 64)).astype(np.float32) for _ in range(2))
        mem, mem_pos = (r.normal(size=(2, 2 * 16 + 4, 64)).astype(np.float32) for _ in range(2))
        pix = r.normal(size=(2, 4, 4, 64)).astype(np.float32)
        masks = r.normal(size=(2, 16, 16)).astype(np.float32) * 8
        outs[dtype] = (jitted(att, num_object_pointer_tokens=4)(feats, mem, pos, mem_pos),
                       *jitted(enc)(pix, masks))
    for ours, ref in zip(outs[jnp.bfloat16], outs[jnp.float32]):
        assert ours.dtype == jnp.bfloat16 and ref.dtype == jnp.float32
        assert _rel(ours, ref) < 3e-2
