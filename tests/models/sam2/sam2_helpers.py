"""Tiny random transformers `Sam2Model`s and the Flax model with the same weights (moved through
`converters.sam2_keys`), for the SAM2 image-path parity tests.

Two shapes: "a" (4 stages [1, 2, 3, 1], windows [4, 4, 2, 1], a global block mid-stage 2, top-down levels
[2, 3], decoder heads of 8 channels) and "b" (4 stages [2, 1, 2, 2], windows [2, 2, 3, 2] (3 pads the 4x4
map), global blocks in stages 0 and 3, top-down level [3] only, 2 multimask outputs, a deeper IoU head, three
two-way layers). Every weight, buffer and position table is redrawn at a visible scale (the reference
initialises several of them to zero).
"""

from __future__ import annotations

import functools

import numpy as np

SHAPES = {
    "a": dict(
        backbone=dict(hidden_size=16, blocks_per_stage=[1, 2, 3, 1], embed_dim_per_stage=[16, 32, 64, 128],
                      num_attention_heads_per_stage=[1, 2, 2, 4], window_size_per_stage=[4, 4, 2, 1],
                      global_attention_blocks=[4], window_positional_embedding_background_size=[4, 4]),
        vision=dict(fpn_hidden_size=32, fpn_top_down_levels=[2, 3]),
        prompt=dict(mask_input_channels=8),
        decoder=dict(mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=24)),
    "b": dict(
        backbone=dict(hidden_size=8, blocks_per_stage=[2, 1, 2, 2], embed_dim_per_stage=[8, 16, 32, 48],
                      num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[2, 2, 3, 2],
                      global_attention_blocks=[1, 6], window_positional_embedding_background_size=[3, 5],
                      mlp_ratio=2.0),
        vision=dict(fpn_hidden_size=48, fpn_top_down_levels=[3]),
        prompt=dict(mask_input_channels=4),
        decoder=dict(mlp_dim=40, num_attention_heads=4, iou_head_hidden_dim=20, iou_head_depth=4,
                     num_hidden_layers=3, num_multimask_outputs=2, attention_downsample_rate=4)),
}
IMAGE = 64  # pixels per side; Hiera maps 16, 8, 4, 2; image embedding 4x4; low-res masks 16x16


def hf_config(shape: str):
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    s = SHAPES[shape]
    b = Sam2HieraDetConfig(image_size=[IMAGE, IMAGE], **s["backbone"])
    widths = list(reversed(s["backbone"]["embed_dim_per_stage"]))
    side = IMAGE // 4
    v = Sam2VisionConfig(backbone_config=b, backbone_channel_list=widths,
                         backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]],
                         **s["vision"])
    d = s["vision"]["fpn_hidden_size"]
    cfg = Sam2Config(vision_config=v,
                     prompt_encoder_config=dict(hidden_size=d, image_size=IMAGE, patch_size=16, **s["prompt"]),
                     mask_decoder_config=dict(hidden_size=d, **s["decoder"]))
    cfg._attn_implementation = "eager"
    return cfg


@functools.lru_cache(maxsize=None)
def torch_model(shape: str, seed: int = 0):
    """The transformers model, eval mode, fp32, every tensor of its state dict redrawn ~N(0, 0.2^2)
    (LayerNorm weights around 1)."""
    import torch
    from transformers import Sam2Model

    torch.manual_seed(seed)
    model = Sam2Model(hf_config(shape)).eval().float()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            noise = torch.randn(t.shape, generator=gen) * 0.2
            if "norm" in name and name.endswith(".weight"):
                noise = noise + 1.0
            t.copy_(noise)
    return model


def hf_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def our_config(shape: str):
    from stvl_jax.models.sam2.config import from_hf

    return from_hf(hf_config(shape).to_dict())


def t2n(x) -> np.ndarray:
    return x.detach().cpu().numpy()


def nchw(x: np.ndarray) -> np.ndarray:
    """(B, H, W, C) -> (B, C, H, W)."""
    return np.moveaxis(np.asarray(x), -1, 1)


@functools.lru_cache(maxsize=None)
def flax_part(shape: str, part: str = ""):
    """Our module with `torch_model(shape)`'s weights (through the key map): the whole `Sam2ImageModel` (part
    "") or one part built alone ("vision_encoder", "prompt_encoder")."""
    from flax import nnx

    from converters.sam2_keys import build_from_hf_state
    from stvl_jax.models.sam2.image_model import Sam2ImageModel
    from stvl_jax.models.sam2.neck import VisionEncoder
    from stvl_jax.models.sam2.prompt_encoder import PromptEncoder

    cfg = our_config(shape)
    build = {"": lambda: Sam2ImageModel(cfg, rngs=nnx.Rngs(0)),
             "vision_encoder": lambda: VisionEncoder(cfg.vision, rngs=nnx.Rngs(0)),
             "prompt_encoder": lambda: PromptEncoder(cfg.prompt_encoder, rngs=nnx.Rngs(0))}[part]
    return build_from_hf_state(build, cfg, hf_state(torch_model(shape)), prefix=part + "/" if part else "")
