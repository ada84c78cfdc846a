"""Host-side M-RoPE `get_rope_index` against transformers' (no weights needed) over random layouts: several
images/videos per row, left/right padding, text-only rows, fractional Qwen2.5-VL video intervals."""

import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_vl_helpers import IMG, VID, build_batch, tiny_hf_config
from stvl_jax.models.qwen_vl.host.positions import get_rope_index

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def hf_rope_index(hf_config, batch):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    cls = Qwen3VLModel if hf_config.model_type == "qwen3_vl" else Qwen2_5_VLModel
    fake = types.SimpleNamespace(config=hf_config)
    fake.get_vision_position_ids = types.MethodType(cls.get_vision_position_ids, fake)
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items() if not k.startswith("pixel")}
    kwargs = dict(image_grid_thw=t.get("image_grid_thw"), video_grid_thw=t.get("video_grid_thw"),
                  attention_mask=t["attention_mask"])
    if hf_config.model_type == "qwen2_5_vl":
        kwargs["second_per_grid_ts"] = t.get("second_per_grid_ts")
    pos, deltas = cls.get_rope_index(fake, t["input_ids"], t["mm_token_type_ids"], **kwargs)
    return pos.numpy(), deltas.numpy()


def ours(hf_config, batch, *, use_types=True):
    vc = hf_config.vision_config
    return get_rope_index(
        batch["input_ids"], image_grid_thw=batch.get("image_grid_thw"), video_grid_thw=batch.get("video_grid_thw"),
        attention_mask=batch["attention_mask"], mm_token_type_ids=batch["mm_token_type_ids"] if use_types else None,
        second_per_grid_ts=batch.get("second_per_grid_ts"), family=hf_config.model_type,
        spatial_merge_size=vc.spatial_merge_size, tokens_per_second=getattr(vc, "tokens_per_second", 1) or 1,
        image_token_id=IMG, video_token_id=VID)


segment = st.one_of(
    st.tuples(st.just("text"), st.integers(1, 6)),
    st.tuples(st.just("image"), st.tuples(st.just(1), st.sampled_from([2, 4, 6]), st.sampled_from([2, 4, 8]))),
    st.tuples(st.just("video"), st.tuples(st.integers(1, 4), st.sampled_from([2, 4]), st.sampled_from([2, 6]))),
)
rows = st.lists(st.lists(segment, min_size=1, max_size=5), min_size=1, max_size=3)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
@settings(max_examples=40, deadline=None)
@given(rows=rows, pad=st.sampled_from(["left", "right"]), seed=st.integers(0, 1000))
def test_rope_index_matches_transformers(family, rows, pad, seed):
    cfg = tiny_hf_config(family)
    batch = build_batch(cfg, rows, seed=seed, pad_side=pad)
    ref_pos, ref_delta = hf_rope_index(cfg, batch)
    pos, delta = ours(cfg, batch)
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(delta, ref_delta)
    # token types derived from the placeholder ids give the same answer
    pos2, _ = ours(cfg, batch, use_types=False)
    np.testing.assert_array_equal(pos2, ref_pos)


def test_qwen25_original_video_advance_differs_only_after_long_videos():
    """`video_position_advance="qwen"` resumes text after the largest position a video used (the original Qwen
    release); transformers 5.x resumes at start + max(h, w)/merge. Images are unaffected."""
    cfg = tiny_hf_config("qwen2_5_vl")
    batch = build_batch(cfg, [[("text", 2), ("video", (4, 2, 2)), ("text", 3)]], seed=0)
    batch["second_per_grid_ts"] = np.array([2.0], np.float32)  # interval = 2 tps * 2 s = 4 positions per grid
    hf, _ = ours(cfg, batch)
    original, _ = get_rope_index(batch["input_ids"], video_grid_thw=batch["video_grid_thw"],
                                 second_per_grid_ts=batch["second_per_grid_ts"], family="qwen2_5_vl",
                                 tokens_per_second=2, image_token_id=IMG, video_token_id=VID,
                                 video_position_advance="qwen")
    # text, <vs>, 4 video tokens at t = 3,7,11,15 (h = w = 3), <ve>, text
    assert hf[0, 0].tolist() == [0, 1, 2, 3, 7, 11, 15, 4, 5, 6, 7]
    assert original[0, 0].tolist() == [0, 1, 2, 3, 7, 11, 15, 16, 17, 18, 19]


def test_placeholder_count_mismatch_is_reported():
    cfg = tiny_hf_config("qwen3_vl")
    batch = build_batch(cfg, [[("text", 2), ("image", (1, 4, 4)), ("text", 1)]])
    with pytest.raises(ValueError, match="placeholder"):
        get_rope_index(batch["input_ids"], image_grid_thw=np.array([[1, 4, 8]]), family="qwen3_vl",
                       image_token_id=IMG, video_token_id=VID)
