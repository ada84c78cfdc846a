"""Full-model fp32 parity with transformers (eager attention) on batches mixing images and videos, left padding,
several images/videos per row, text-only rows — over several tiny configs per family."""

import functools

import numpy as np
import pytest

from qwen_vl_helpers import build_batch, our_model_from_torch, tiny_hf_config, torch_logits, torch_model

pytestmark = pytest.mark.torch

TOL = 1e-4  # max |Δlogit| in fp32

CONFIGS = {
    # name: (family, tie, text overrides, vision overrides)
    "q3-default": ("qwen3_vl", True, {}, {}),
    "q3-odd-heads-gqa3-untied": ("qwen3_vl", False,
                                 dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=1, head_dim=16),
                                 dict(hidden_size=48, num_heads=3, intermediate_size=40, patch_size=16,
                                      num_position_embeddings=36, deepstack_visual_indexes=[1])),
    "q3-mha-no-deepstack": ("qwen3_vl", True,
                            dict(num_attention_heads=2, num_key_value_heads=2, head_dim=32, num_hidden_layers=2,
                                 rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=[6, 5, 5],
                                                      mrope_interleaved=True)),
                            dict(num_heads=1, deepstack_visual_indexes=[], depth=2)),
    "q25-default": ("qwen2_5_vl", True, {}, {}),
    "q25-odd-heads-untied": ("qwen2_5_vl", False,
                             dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=3),
                             dict(hidden_size=48, num_heads=3, window_size=56, fullatt_block_indexes=[0, 2],
                                  tokens_per_second=4)),
    "q25-gqa5": ("qwen2_5_vl", True,
                 dict(hidden_size=80, num_attention_heads=5, num_key_value_heads=1, num_hidden_layers=2,
                      rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3])),
                 dict(patch_size=14, window_size=112, depth=2, fullatt_block_indexes=[])),
}

ROWS = [
    # several images and videos in one row, non-square grids
    [("text", 4), ("image", (1, 4, 6)), ("text", 3), ("video", (2, 4, 4)), ("text", 2), ("image", (1, 6, 2)),
     ("text", 2)],
    # a video only, left-padded (shorter row)
    [("text", 3), ("video", (3, 6, 4)), ("text", 2)],
    # text only
    [("text", 7)],
]


@functools.lru_cache(maxsize=None)
def _pair(name):
    family, tie, text, vision = CONFIGS[name]
    cfg = tiny_hf_config(family, tie=tie, text=text, vision=vision)
    tm = torch_model(cfg)
    return cfg, tm, our_model_from_torch(tm)


@pytest.fixture(params=sorted(CONFIGS))
def pair(request):
    return _pair(request.param)


def _check(cfg, tm, ours, rows, seed=0):
    batch = build_batch(cfg, rows, seed=seed)
    ref = torch_logits(tm, batch)
    out = np.asarray(ours(**batch).logits)
    assert out.shape == ref.shape
    valid = batch["attention_mask"].astype(bool)
    err = np.abs(out - ref)[valid].max()
    assert err < TOL, f"max |Δlogit| {err:.2e} over real tokens"
    # padded positions are meaningless but must be finite
    assert np.isfinite(out).all()


def test_mixed_images_videos_left_padding(pair):
    _check(*pair, ROWS)


def test_images_only_and_videos_only(pair):
    cfg, tm, ours = pair
    _check(cfg, tm, ours, [[("text", 2), ("image", (1, 4, 4)), ("text", 1)], [("image", (1, 2, 8)), ("text", 5)]])
    _check(cfg, tm, ours, [[("video", (2, 6, 6)), ("text", 4)]], seed=1)


@pytest.mark.parametrize("name", ["q3-default", "q25-default"])
def test_right_padding_matches_on_real_tokens(name):
    cfg, tm, ours = _pair(name)
    batch = build_batch(cfg, ROWS, pad_side="right", seed=2)
    ref = torch_logits(tm, batch)
    out = np.asarray(ours(**batch).logits)
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(out - ref)[valid].max() < TOL
