"""Tiny random transformers SAM2 checkpoints (CPU, fp32) for the converter tests: `save_pretrained` directories
of `Sam2Model` (model_type `sam2`) and `Sam2VideoModel` (`sam2_video`), every tensor redrawn at a visible scale
(the reference zero-initialises several)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

IMAGE = 64  # pixels per side: Hiera maps 16, 8, 4, 2; image embedding 4x4; low-res masks 16x16


def image_config():
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(hidden_size=8, blocks_per_stage=[1, 2, 1, 1], embed_dim_per_stage=[8, 16, 24, 32],
                                  num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 2, 2, 1],
                                  global_attention_blocks=[2], image_size=[IMAGE, IMAGE],
                                  window_positional_embedding_background_size=[4, 4])
    side = IMAGE // 4
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[32, 24, 16, 8],
                              backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]],
                              fpn_hidden_size=16)
    prompt = dict(hidden_size=16, image_size=IMAGE, patch_size=16, mask_input_channels=4)
    decoder = dict(hidden_size=16, mlp_dim=24, num_attention_heads=2, iou_head_hidden_dim=16)
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def redraw(model, seed: int = 0):
    """Every parameter and buffer of the state dict redrawn: matrices ~N(0, 1/fan_in), vectors ~N(0, 0.3^2)
    (norm weights around 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if t.ndim >= 2:
                t.copy_(noise / math.sqrt(max(t[0].numel(), 1)))
            else:
                centre = 1.0 if ("norm" in name and name.endswith("weight")) or name.endswith(".scale") else 0.0
                t.copy_(centre + 0.3 * noise)
    return model


def save_image_model(directory: Path, seed: int = 0, dtype=None) -> Path:
    import torch
    from transformers import Sam2Model

    torch.manual_seed(seed)
    model = redraw(Sam2Model(image_config()).eval(), seed)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(directory)
    return Path(directory)


def video_config():
    """A tiny `Sam2VideoConfig` at 64 px: width 64 (a multiple of the memory width 64, which transformers
    hard-codes), 2 memory-attention layers, 3 memories, 2 fuser blocks."""
    from transformers import Sam2VideoConfig

    e, d = IMAGE // 16, 64
    image = image_config().to_dict()
    vision = {**image["vision_config"], "fpn_hidden_size": d}
    return Sam2VideoConfig(
        vision_config=vision, image_size=IMAGE,
        prompt_encoder_config={**image["prompt_encoder_config"], "hidden_size": d},
        mask_decoder_config={**image["mask_decoder_config"], "hidden_size": d},
        memory_attention_hidden_size=d, memory_attention_num_layers=2, memory_attention_num_attention_heads=2,
        memory_attention_feed_forward_hidden_size=48, memory_attention_rope_feat_sizes=[e, e],
        memory_encoder_hidden_size=d, memory_encoder_output_channels=64, mask_downsampler_embed_dim=d,
        memory_fuser_embed_dim=d, memory_fuser_intermediate_dim=48, memory_fuser_num_layers=2, num_maskmem=3)


def save_video_model(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Sam2VideoModel

    torch.manual_seed(seed)
    model = redraw(Sam2VideoModel(video_config()).eval(), seed)
    model.save_pretrained(directory)
    return Path(directory)


def safetensors_state(directory) -> dict[str, np.ndarray]:
    """{name: numpy} of every tensor in a directory's safetensors files (bf16 as its int16 bits)."""
    import torch
    from safetensors import safe_open

    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                t = h.get_tensor(k)
                out[k] = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
    return out
