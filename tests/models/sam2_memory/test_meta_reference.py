"""The second reference, Meta's `sam2` package: the key map under its names covers exactly the memory tensors
of a real SAM2.1 model (names and shapes), and our memory encoder / attention match its modules (fp32)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2.modeling.memory_attention")

from flax import nnx  # noqa: E402

from converters.sam2_video_keys import (meta_entries, memory_attention_keys, memory_embedding_keys,  # noqa: E402
                                        memory_encoder_keys)
from stvl_jax.models.sam2.memory_attention import MemoryAttention  # noqa: E402
from stvl_jax.models.sam2.memory_config import (MemoryAttentionConfig, MemoryBankConfig,  # noqa: E402
                                                MemoryEncoderConfig)
from stvl_jax.models.sam2.memory_encoder import MemoryEncoder  # noqa: E402
from sam2_memory_helpers import build_loaded, jitted  # noqa: E402

TOL = 1e-4
D, HEADS, LAYERS, FFN, (H, W), THETA = 128, 2, 2, 40, (6, 4), 100.0


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(noise / np.sqrt(p[0].numel()))
            else:
                p.copy_(float(name.endswith(("norm1.weight", "norm2.weight", "norm3.weight", "norm.weight", "gamma",
                                             ".1.weight", ".4.weight"))) + 0.3 * noise)
    return {k: v.numpy() for k, v in module.state_dict().items()}


def test_meta_names_cover_a_real_sam2_1_model():
    build = pytest.importorskip("sam2.build_sam")
    sd = build.build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", mode="eval").state_dict()
    entries = meta_entries(memory_encoder_keys(MemoryEncoderConfig()) + memory_attention_keys(MemoryAttentionConfig())
                           + memory_embedding_keys(MemoryBankConfig(), ours_prefix=""))
    names = {n: e.hf_shape for e in entries for n in e.hf_names()}
    assert {n: tuple(sd[n].shape) for n in names if n in sd} == names
    memory_side = ("memory_encoder.", "memory_attention.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj",
                   "obj_ptr", "mask_downsample.")
    assert sorted(k for k in sd if k.startswith(memory_side)) == sorted(names)


def test_memory_attention_matches_meta():
    from sam2.modeling.memory_attention import MemoryAttention as MetaAttention
    from sam2.modeling.memory_attention import MemoryAttentionLayer
    from sam2.modeling.sam.transformer import RoPEAttention

    rope = dict(rope_theta=THETA, feat_sizes=[W, H], embedding_dim=D, num_heads=HEADS, downsample_rate=1, dropout=0.1)
    layer = MemoryAttentionLayer(activation="relu", cross_attention=RoPEAttention(rope_k_repeat=True, kv_in_dim=64,
                                                                                  **rope),
                                 d_model=D, dim_feedforward=FFN, dropout=0.1, pos_enc_at_attn=False,
                                 pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
                                 self_attention=RoPEAttention(**rope))
    meta = MetaAttention(d_model=D, pos_enc_at_input=True, layer=layer, num_layers=LAYERS).eval()
    sd = _randomize(meta, 0)
    cfg = MemoryAttentionConfig(hidden_size=D, num_layers=LAYERS, num_heads=HEADS, ffn_hidden_size=FFN,
                                rope_feat_sizes=(W, H), rope_theta=THETA)
    ours = build_loaded(lambda: MemoryAttention(cfg, rngs=nnx.Rngs(0)),
                        meta_entries(memory_attention_keys(cfg, "memory_attention.", "")),
                        {"memory_attention." + k: v for k, v in sd.items()})
    rng = np.random.default_rng(1)
    n, ptr = H * W, 8
    feats, pos = (rng.normal(size=(2, n, D)).astype(np.float32) for _ in range(2))
    mem, mem_pos = (rng.normal(size=(2, 3 * n + ptr, 64)).astype(np.float32) for _ in range(2))
    sf = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(1, 0, 2)))  # noqa: E731
    with torch.no_grad():
        ref = meta(sf(feats), sf(mem), sf(pos), sf(mem_pos), num_obj_ptr_tokens=ptr).numpy().transpose(1, 0, 2)
    got = np.asarray(jitted(ours, num_object_pointer_tokens=ptr)(feats, mem, pos, mem_pos))
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_memory_encoder_matches_meta():
    from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler
    from sam2.modeling.memory_encoder import MemoryEncoder as MetaEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    meta = MetaEncoder(out_dim=64, in_dim=D,
                       mask_downsampler=MaskDownSampler(embed_dim=D, kernel_size=3, stride=2, padding=1,
                                                        total_stride=4),
                       fuser=Fuser(CXBlock(dim=D, kernel_size=7, padding=3, layer_scale_init_value=1e-6), 2),
                       position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True)).eval()
    sd = _randomize(meta, 2)
    cfg = MemoryEncoderConfig(hidden_size=D, downsampler_embed_dim=D, fuser_embed_dim=D, fuser_intermediate_dim=4 * D,
                              downsampler_total_stride=4)
    ours = build_loaded(lambda: MemoryEncoder(cfg, rngs=nnx.Rngs(0)),
                        meta_entries(memory_encoder_keys(cfg, "memory_encoder.", "")),
                        {"memory_encoder." + k: v for k, v in sd.items()})
    rng = np.random.default_rng(3)
    pix = rng.normal(size=(2, D, H, W)).astype(np.float32)
    masks = (rng.normal(size=(2, 1, 4 * H, 4 * W)) * 8).astype(np.float32)
    with torch.no_grad():
        ref = meta(torch.from_numpy(pix), torch.from_numpy(masks), skip_mask_sigmoid=True)
    feat, pos = jitted(ours)(pix.transpose(0, 2, 3, 1), masks[:, 0])
    np.testing.assert_allclose(np.asarray(feat).transpose(0, 3, 1, 2), ref["vision_features"].numpy(), atol=TOL,
                               rtol=0)
    np.testing.assert_allclose(np.asarray(pos).transpose(0, 3, 1, 2), ref["vision_pos_enc"][0].numpy(), atol=1e-5,
                               rtol=0)
