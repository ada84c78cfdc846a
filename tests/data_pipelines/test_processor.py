"""Patchify / resize parity with transformers' Qwen2VLImageProcessorPil; video layout (temporal pairs)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_vl_helpers import per_frame_preprocessing
from stvl_jax.models.qwen_vl.host.preprocess import (
    PreprocessConfig, group_timestamps, image_size, process_images, process_video, smart_resize, video_size,
)


def _hf(cfg: PreprocessConfig):
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=cfg.patch_size, merge_size=cfg.merge_size, temporal_patch_size=cfg.temporal_patch_size,
        image_mean=list(cfg.image_mean), image_std=list(cfg.image_std),
        size={"shortest_edge": cfg.image.min_pixels, "longest_edge": _effective_max(cfg)})


def _effective_max(cfg: PreprocessConfig) -> int:
    cap = cfg.image.max_tokens_per_frame
    return cfg.image.max_pixels if cap is None else min(cfg.image.max_pixels, cap * cfg.factor**2)


CONFIGS = {
    "qwen2_5_vl_p14": per_frame_preprocessing("qwen2_5_vl"),
    "qwen3_vl_p16": per_frame_preprocessing("qwen3_vl"),
    "qwen3_vl_p16_small": per_frame_preprocessing("qwen3_vl").updated({"image": {"max_tokens_per_frame": 16},
                                                                       "video": {"max_tokens_per_frame": 16}}),
    "qwen2_5_vl_p14_small": per_frame_preprocessing("qwen2_5_vl", max_pixels=112 * 112),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("hw", [(128, 128), (100, 150), (37, 61), (300, 200)])
def test_images_equal_hf_pil_processor(name, hw):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(hash((name, hw)) % 2**32)
    imgs = rng.integers(0, 256, (3, *hw, 3), dtype=np.uint8)
    ref = _hf(cfg)(list(imgs), return_tensors="np")
    pv, grid = process_images(imgs, cfg)
    assert pv.dtype == np.float32
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    np.testing.assert_array_equal(pv, ref["pixel_values"])  # bit-exact


@given(h=st.integers(8, 2000), w=st.integers(8, 2000), factor=st.sampled_from([28, 32]),
       max_tok=st.integers(4, 1024))
@settings(max_examples=200, deadline=None)
def test_smart_resize_matches_transformers(h, w, factor, max_tok):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    if max(h, w) / min(h, w) > 200:
        return
    kw = dict(factor=factor, min_pixels=factor * factor * 4, max_pixels=factor * factor * max(4, max_tok))
    assert smart_resize(h, w, **kw) == hf_smart_resize(h, w, **kw)


@pytest.mark.parametrize("name", ["qwen2_5_vl_p14", "qwen3_vl_p16"])
def test_video_layout_is_temporal_pairs_of_hf_image_patches(name):
    """A video row = (C, T, P, P) with T indexing the two frames of a group; spatial order = HF's."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 112, 168, 3), dtype=np.uint8)  # odd: last frame repeated
    size = image_size(112, 168, cfg)
    assert video_size(5, 112, 168, cfg) == size  # per-frame rule: the same bound for a frame and an image
    pv, grid = process_video(frames, cfg, size)
    t, gh, gw = grid[0]
    assert t == 3 and pv.shape == (3 * gh * gw, 3 * 2 * cfg.patch_size**2)
    p = cfg.patch_size
    rows = pv.reshape(3, gh * gw, 3, 2, p, p)
    hf = _hf(cfg)
    padded = list(frames) + [frames[-1]]
    for g in range(3):
        for j in range(2):
            ref = hf([padded[2 * g + j]], return_tensors="np")["pixel_values"].reshape(gh * gw, 3, 2, p, p)
            np.testing.assert_array_equal(rows[g, :, :, j], ref[:, :, 0])
    # identical frame pairs reproduce the image processor row for row
    pair = np.stack([frames[0], frames[0]])
    pv2, _ = process_video(pair, cfg, size)
    np.testing.assert_array_equal(pv2, hf([frames[0]], return_tensors="np")["pixel_values"])


def test_video_rows_feed_hf_conv3d_patch_embed_like_hf():
    """The HF Qwen3-VL patch embedding views rows as (C, T, P, P): feeding our rows gives the same result as
    a Conv3d over the (C, T, H, W) frame stack at that patch."""
    torch = pytest.importorskip("torch")
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed

    cfg = per_frame_preprocessing("qwen3_vl")
    vc = Qwen3VLVisionConfig(hidden_size=8, patch_size=16, temporal_patch_size=2, in_channels=3)
    torch.manual_seed(0)
    emb = Qwen3VLVisionPatchEmbed(vc).float()
    frames = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    pv, grid = process_video(frames, cfg, (64, 64))
    with torch.no_grad():
        out = emb(torch.from_numpy(pv)).numpy()
        x = (frames.astype(np.float64) / 255).astype(np.float32)
        x = ((x - 0.5) / 0.5).transpose(3, 0, 1, 2)[None]  # (1, C, T, H, W)
        full = emb.proj(torch.from_numpy(np.ascontiguousarray(x))).numpy()[0, :, 0]  # (hidden, 4, 4)
    # row order: merge blocks (2x2) in raster order of blocks
    order = [(bh * 2 + i, bw * 2 + j) for bh in range(2) for bw in range(2) for i in range(2) for j in range(2)]
    expect = np.stack([full[:, r, c] for r, c in order])
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)


def test_group_timestamps_match_hf_qwen3_processor():
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    idx = [0, 3, 6, 9, 12]
    ref = Qwen3VLProcessor._calculate_timestamps(None, list(idx), 4.0, 2)
    np.testing.assert_allclose(group_timestamps(np.array(idx) / 4.0), ref)
    assert np.allclose(group_timestamps(np.array([0.0, 0.5, 1.0, 1.5])), [0.25, 1.25])
