"""A tiny random transformers `Sam2VideoModel` (CPU, fp32) and our `Sam2VideoModel` with the same weights.

The image path is tests/models/sam2's shape "a" at 64 px (Hiera maps 16, 8, 4, 2; a global block mid-stage 2;
image embedding 4x4, low-res masks 16x16); memory: 2 memory-attention layers of 2 heads, 3 memories, 2 fuser
blocks, mem_dim 64 (transformers hard-codes the memory attention's key/value width to 64). Every parameter is
redrawn (HF zero-initialises several, which would hide whole branches from a parity test).
"""

from __future__ import annotations

import functools
import math

import numpy as np

IMAGE = 64
D = 128  # 2 x mem_dim: object pointers are split into 2 memory tokens (HF breaks when D == mem_dim)


def hf_video_config(**top):
    from transformers import Sam2VideoConfig

    e = IMAGE // 16
    vision = dict(backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=16,
                                       blocks_per_stage=[1, 2, 3, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                       num_attention_heads_per_stage=[1, 2, 2, 4], window_size_per_stage=[4, 4, 2, 1],
                                       global_attention_blocks=[4], window_positional_embedding_background_size=[4, 4],
                                       image_size=[IMAGE, IMAGE]),
                  backbone_channel_list=[128, 64, 32, 16],
                  backbone_feature_sizes=[[4 * e, 4 * e], [2 * e, 2 * e], [e, e]], fpn_hidden_size=D,
                  fpn_top_down_levels=[2, 3])
    kw = dict(
        vision_config=vision, image_size=IMAGE,
        prompt_encoder_config=dict(hidden_size=D, image_size=IMAGE, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=D, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=24),
        memory_attention_hidden_size=D, memory_attention_num_layers=2, memory_attention_num_attention_heads=2,
        memory_attention_feed_forward_hidden_size=48, memory_attention_rope_feat_sizes=[e, e],
        memory_encoder_hidden_size=D, memory_encoder_output_channels=64, mask_downsampler_embed_dim=D,
        memory_fuser_embed_dim=D, memory_fuser_intermediate_dim=48, memory_fuser_num_layers=2, num_maskmem=3,
        max_object_pointers_in_encoder=4)
    kw.update(top)
    cfg = Sam2VideoConfig(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def _redraw(model, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if not p.is_floating_point():
                continue
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2 and p.shape[0] > 1:
                p.copy_(noise / math.sqrt(max(p[0].numel(), 1)))
            else:
                centre = 1.0 if ("norm" in name and name.endswith("weight")) or name.endswith(".scale") else 0.0
                p.copy_(centre + 0.3 * noise)


@functools.lru_cache(maxsize=None)
def torch_video_model(seed: int = 0, **top):
    import torch
    from transformers import Sam2VideoModel

    torch.manual_seed(seed)
    model = Sam2VideoModel(hf_video_config(**top)).eval().float()
    _redraw(model, seed + 1)
    return model


def hf_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def our_video_config(**top):
    from stvl_jax.models.sam2.video_config import from_hf

    return from_hf(hf_video_config(**top).to_dict())


@functools.lru_cache(maxsize=None)
def flax_video_model(seed: int = 0, **top):
    """Our `Sam2VideoModel` (abstract, then filled) with `torch_video_model(seed)`'s weights via the key map."""

    from converters.sam2_video_keys import load_hf_video_state
    from stvl_jax.models.sam2.video_model import abstract_video_model

    cfg = our_video_config(**top)
    return load_hf_video_state(abstract_video_model(cfg), cfg, hf_state(torch_video_model(seed, **top)))


def hf_fp32_memory(monkeypatch):
    """HF's `maskmem_features.to(torch.bfloat16)` (in `_encode_new_memory`) made a no-op: `torch.bfloat16` reads as
    float32 inside modeling_sam2_video only (the module's only use of bfloat16 is that cast). Returns the
    matching bank dtype for ours."""
    import types

    import jax.numpy as jnp
    import torch
    import transformers.models.sam2_video.modeling_sam2_video as mod

    class _Torch(types.ModuleType):
        def __getattr__(self, name):
            return torch.float32 if name == "bfloat16" else getattr(torch, name)

    monkeypatch.setattr(mod, "torch", _Torch("torch"))
    return jnp.float32
