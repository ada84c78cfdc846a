"""Shared helpers for Qwen-VL tests: tiny HF configs, synthetic batches with images/videos and left padding,
and a (torch model, our model) pair with identical weights."""

from __future__ import annotations

import numpy as np

IMG, VID, VSTART, VEND = 250, 251, 252, 253


def tiny_hf_config(family: str = "qwen3_vl", *, tie: bool = True, text: dict | None = None,
                   vision: dict | None = None, **top):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    if family == "qwen3_vl":
        t = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16,
                 rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[3, 3, 2],
                                      mrope_interleaved=True))
        v = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=8, out_hidden_size=64,
                 num_position_embeddings=16, deepstack_visual_indexes=[0, 2])
        cls = Qwen3VLConfig
    else:
        t = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                             mrope_section=[2, 3, 3]))
        v = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=7, out_hidden_size=64,
                 window_size=28, fullatt_block_indexes=[1], tokens_per_second=2)
        cls = Qwen2_5_VLConfig
    t.update(text or {})
    v.update(vision or {})
    if "out_hidden_size" not in (vision or {}):
        v["out_hidden_size"] = t["hidden_size"]
    t.setdefault("initializer_range", 0.2)
    v.setdefault("initializer_range", 0.2)
    cfg = cls(text_config=t, vision_config=v, image_token_id=IMG, video_token_id=VID, vision_start_token_id=VSTART,
              vision_end_token_id=VEND, tie_word_embeddings=tie, **top)
    return cfg


def build_batch(hf_config, rows, *, seed: int = 0, pad_side: str = "left"):
    """rows: list of lists of segments: ("text", n) | ("image", (t, h, w)) | ("video", (t, h, w)) with (t, h, w) in
    patches (t counts temporal patches). Qwen3-VL videos get one <vision_start> block per temporal patch behind a
    3-token "timestamp"; Qwen2.5-VL videos are one block. Returns the HF-style batch dict (numpy)."""
    rng = np.random.default_rng(seed)
    family = hf_config.model_type
    vc = hf_config.vision_config
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    merge2 = vc.spatial_merge_size**2
    ids_rows, types_rows = [], []
    images, videos, img_grids, vid_grids, seconds = [], [], [], [], []

    def text(n):
        return list(rng.integers(0, 240, n)), [0] * n

    for row in rows:
        ids, types = [], []
        for kind, arg in row:
            if kind == "text":
                a, b = text(arg)
                ids += a
                types += b
                continue
            t, h, w = arg
            n_patch = t * h * w
            pix = rng.standard_normal((n_patch, patch_dim)).astype(np.float32)
            if kind == "image":
                images.append(pix)
                img_grids.append((t, h, w))
                ids += [VSTART] + [IMG] * (n_patch // merge2) + [VEND]
                types += [0] + [1] * (n_patch // merge2) + [0]
            elif family == "qwen3_vl":
                videos.append(pix)
                vid_grids.append((t, h, w))
                for _ in range(t):
                    a, b = text(3)
                    ids += a + [VSTART] + [VID] * (h * w // merge2) + [VEND]
                    types += b + [0] + [2] * (h * w // merge2) + [0]
            else:
                videos.append(pix)
                vid_grids.append((t, h, w))
                seconds.append(float(rng.choice([0.5, 1.0, 2 / 3])))
                ids += [VSTART] + [VID] * (n_patch // merge2) + [VEND]
                types += [0] + [2] * (n_patch // merge2) + [0]
        ids_rows.append(ids)
        types_rows.append(types)
    length = max(map(len, ids_rows))
    B = len(rows)
    input_ids = np.zeros((B, length), np.int64)
    mask = np.zeros((B, length), np.int64)
    mm = np.zeros((B, length), np.int64)
    for b, (ids, types) in enumerate(zip(ids_rows, types_rows)):
        n = len(ids)
        sl = slice(length - n, length) if pad_side == "left" else slice(0, n)
        input_ids[b, sl], mask[b, sl], mm[b, sl] = ids, 1, types
    batch = dict(input_ids=input_ids, attention_mask=mask, mm_token_type_ids=mm)
    if images:
        batch["pixel_values"] = np.concatenate(images)
        batch["image_grid_thw"] = np.array(img_grids, np.int64)
    if videos:
        batch["pixel_values_videos"] = np.concatenate(videos)
        batch["video_grid_thw"] = np.array(vid_grids, np.int64)
        if family == "qwen2_5_vl":
            batch["second_per_grid_ts"] = np.array(seconds, np.float32)
    return batch


def torch_model(hf_config, seed: int = 0):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    cls = Qwen3VLForConditionalGeneration if hf_config.model_type == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    hf_config._attn_implementation = "eager"
    model = cls(hf_config).eval()
    # HF initialises norms to 1 and biases to 0; perturb them so the parity test sees every tensor
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def our_model_from_torch(hf_model, **kwargs):
    from flax import nnx

    from converters.qwen_vl_config import from_hf_dict
    from converters.qwen_vl_convert import load_flat_params, params_from_hf
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration

    config = from_hf_dict(hf_model.config.to_dict())
    sd = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    flat = params_from_hf(config, sd.keys(), sd.__getitem__)
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0), **kwargs)
    load_flat_params(model, flat)
    return model


def torch_logits(hf_model, batch):
    import torch

    tb = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    with torch.no_grad():
        return hf_model(**tb).logits.numpy()


def per_frame_preprocessing(family: str, max_pixels: int | None = None, **overrides):
    """One per-frame resize rule for images and videos (the project's defaults before preprocessing moved into
    checkpoints: min 32*32 / 56*56, max 256*32*32 / 1280*28*28 pixels per frame), `max_pixels` overriding it."""
    from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig

    mins, maxs = {"qwen3_vl": 1024, "qwen2_5_vl": 3136}, {"qwen3_vl": 262144, "qwen2_5_vl": 1003520}
    rule = {"min_pixels": mins[family], "max_pixels": max_pixels or maxs[family], "budget": "frame"}
    return PreprocessConfig.default(family, image=rule, video=rule, **overrides)


def pipeline_kwargs(**kw) -> dict:
    """PipelineConfig keyword arguments with `vision=` / `max_frames=` / `video_fps=` (test shorthands) folded
    into `preprocess`."""
    pre = kw.pop("vision", None) or kw.pop("preprocess", None) or per_frame_preprocessing("qwen3_vl")
    frames = {k: kw.pop(k2) for k, k2 in (("max_frames", "max_frames"), ("fps", "video_fps")) if k2 in kw}
    return {**kw, "preprocess": pre.updated({"frames": frames}) if frames else pre}
