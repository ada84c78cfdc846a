"""Grain pipeline of VIRST samples: static shapes, the frames and masks it picks, counted skips, exact resume."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from data_pipelines.formats.rvos import RvosDataset
from data_pipelines.grain.rvos import RvosPipelineConfig, make_rvos_pipeline, resize_masks, sample_frames
from stvl_jax.errors import ConfigError
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig, process_video
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig, preprocess_frames


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from stvl_jax.data_cli import main

    out = str(tmp_path_factory.mktemp("rvos_pipe"))
    assert main(["synth", "--out", out, "--videos", "6", "--seed", "1", "--workers", "1", "--export", "rvos"]) == 0
    return out


def _cfg(root, **kw):
    return RvosPipelineConfig(root=root, format="synthetic", split="train", vlm_frames=4, seg_frames=2,
                              vlm_size=(64, 64), sam2=Sam2PreprocessConfig(image_size=32), batch_size=2, **kw)


def test_sample_frames_spans_and_short_videos():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx, seg = sample_frames(10, 4, 2, rng)
        # spans of 10 frames in 4: [0, 2), [2, 5), [5, 7), [7, 10)
        assert [a <= i < b for i, (a, b) in zip(idx, [(0, 2), (2, 5), (5, 7), (7, 10)])] == [True] * 4
        assert len(seg) == 2 and seg[0] < seg[1] and 0 <= seg.min() and seg.max() < 4
    idx, _ = sample_frames(3, 4, 4, rng)
    assert idx.tolist() == [0, 1, 2, 2]


def test_resize_masks_nearest_at_centres():
    m = np.random.default_rng(1).random((2, 8, 8)) < 0.5
    assert (resize_masks(m, 4) == m[:, 1::2, 1::2]).all()  # centres of 4 cells over 8 pixels: 1, 3, 5, 7
    assert (resize_masks(m, 8) == m).all()


def test_batches_are_static_and_hold_the_picked_frames(synth):
    cfg = _cfg(synth, shuffle=False)
    it = make_rvos_pipeline(cfg)
    ds = RvosDataset(synth, "synthetic", "train")
    pre = PreprocessConfig.qwen3_vl()
    shapes = None
    for _ in range(3):
        b = next(it)
        got = {k: (v.shape, v.dtype) for k, v in b.items()}
        shapes = shapes or got
        assert got == shapes  # one shape per key across batches
        assert b["sam2_pixel_values"].shape == (2, 2, 3, 32, 32) and b["masks"].shape == (2, 2, 32, 32)
        assert b["video_grid_thw"].tolist() == [[2, 4, 4]] * 2  # 4 frames -> 2 temporal groups of 64/16 patches
        for i, key in enumerate(b["key"]):
            e = next(x for x in ds.expressions if x.key == key)
            assert b["expression"][i] == e.text
            idx, seg = b["frame_indices"][i], b["seg_index"][i]
            frames = ds.read_frames(e, idx)
            np.testing.assert_array_equal(b["sam2_pixel_values"][i], preprocess_frames(frames[seg], cfg.sam2))
            full = ds.read_masks(e, frames.shape[1:3], idx[seg])  # 128 x 128 -> 32 x 32: every 4th from 2
            np.testing.assert_array_equal(b["masks"][i], full[:, 2::4, 2::4])
            rows = process_video(frames, pre, (64, 64))[0]
            n = len(rows)
            np.testing.assert_array_equal(b["pixel_values_videos"][i * n:(i + 1) * n], rows)


def _text_len(sample, rng):  # module level: the config is pickled with it
    return {"n_chars": np.int64(len(sample["expression"])), "grid_t": sample["video_grid_thw"][0, 0]}


def test_sample_fn_adds_arrays(synth):
    b = next(make_rvos_pipeline(_cfg(synth, shuffle=False, sample_fn=_text_len)))
    assert b["n_chars"].tolist() == [len(t) for t in b["expression"]] and b["grid_t"].tolist() == [2, 2]


def test_resume_gives_the_same_batches(synth):
    cfg = _cfg(synth, num_epochs=None, seed=7)
    it = make_rvos_pipeline(cfg)
    next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    it2 = make_rvos_pipeline(cfg)
    it2.set_state(state)
    for a, b in zip(want, [next(it2) for _ in range(3)]):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_unreadable_samples_are_counted(synth, tmp_path):
    root = str(tmp_path / "set")
    shutil.copytree(os.path.join(synth, "rvos"), os.path.join(root, "rvos"))
    ds = RvosDataset(root, "synthetic", "train")
    shutil.rmtree(os.path.join(root, "rvos", "train", "JPEGImages", ds.expressions[0].vid))
    n_bad = sum(e.vid == ds.expressions[0].vid for e in ds.expressions)
    it = make_rvos_pipeline(_cfg(root, drop_remainder=False))
    n = sum(len(b["key"]) for b in it)
    assert it.stats["skipped"] == {"missing_file": n_bad} and n == len(ds.expressions) - n_bad
    assert ds.expressions[0].vid in next(iter(it.first_skips.values()))


def test_config_refusals(synth):
    with pytest.raises(ConfigError, match="seg_frames"):
        RvosPipelineConfig(root=synth, vlm_frames=2, seg_frames=3, vlm_size=(64, 64))
    with pytest.raises(ConfigError, match="multiples of 32"):
        RvosPipelineConfig(root=synth, vlm_size=(48, 64))
    with pytest.raises(ConfigError, match="patch_buckets"):
        RvosPipelineConfig(root=synth)
