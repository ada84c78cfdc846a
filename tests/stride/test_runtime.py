"""The streaming runtime: prefix reuse changes nothing (same seed -> same outputs), the cropped prefix is the
shorter video, slot positions (correct = training's get_rope_index; reference = cached rope_deltas lag), chunk
geometry, and the runtime prompt equals the training pipeline's tokens and pixels."""

import json
import os

import numpy as np
import pytest

from data_pipelines.formats.stride import StrideWindowConfig
from data_pipelines.grain import PipelineConfig, make_pipeline
from data_pipelines.video import read_video
from stvl_jax.infer.stride_prompt import StridePrompt, slot_positions
from stvl_jax.infer.stride_runtime import StreamConfig, StrideStream
from stvl_jax.models.qwen_vl.host.positions import get_rope_index
from stvl_jax.models.stride.config import StrideConfig
from stvl_jax.models.stride.model import window_probs

QUERY = "When does the red circle stop moving?"


@pytest.fixture(scope="module")
def prompt(tok, tiny_model, vision):
    return StridePrompt(tok, tiny_model.config, vision, StrideConfig.from_tokenizer(tok, window=8))


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 255, (13, 64, 64, 3), dtype=np.uint8)


def _run(model, prompt, frames, **kw):
    # confidence 0.55 (retain when |p - v| < 0.45): the random model is rarely 0.75-confident
    cfg = StreamConfig(chunk_size=2, max_window=8, stride=4, multi_event=True, max_triggers=5, confidence=0.55, **kw)
    return StrideStream(model, prompt, cfg).run(frames, QUERY)


@pytest.mark.parametrize("positions", ["correct", "reference"])
def test_prefix_reuse_gives_the_same_outputs(tiny_model, prompt, frames, positions):
    runs = {c: _run(tiny_model, prompt, frames, cache=c, positions=positions) for c in ("mega", "chunk", "none")}
    mega = runs["mega"]
    assert len(mega.chunks) == 7 and any(c.labels.any() for c in mega.chunks)  # non-trivial labels
    assert any(c.retained for c in mega.chunks)  # the retain step ran
    for name in ("chunk", "none"):
        other = runs[name]
        assert len(other.chunks) == len(mega.chunks)
        for a, b in zip(mega.chunks, other.chunks):
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.p_active, b.p_active, atol=1e-5, rtol=0)
            assert a.forwards == b.forwards and a.span == b.span
        assert other.segments == mega.segments


def test_reference_positions_change_the_probabilities(tiny_model, prompt, frames):
    a = _run(tiny_model, prompt, frames, positions="correct")
    b = _run(tiny_model, prompt, frames, positions="reference")
    # the first chunk of each mega-window has nothing cut away (same ids); later chunks differ
    assert np.abs(a.chunks[1].p_active - b.chunks[1].p_active).max() > 1e-4


def test_chunk_geometry_and_mega_window_advance(tiny_model, prompt, frames):
    r = _run(tiny_model, prompt, frames)
    # 13 frames; cursor 2, 4, ..., 12, 13 (the reference's last step goes to the odd end); max_window 8,
    # stride 4: stack_start 0 until the cursor passes 8, then 4 (cursor 10, 12), then 8 (cursor 13: 13 - 4 > 8);
    # the view at cursor 13 is 5 frames rounded down to 4 (pairs): frames 8..11, a new mega-window
    assert [c.t_last for c in r.chunks] == [1, 3, 5, 7, 9, 11, 11]
    assert [c.seen_start for c in r.chunks] == [0, 0, 0, 0, 4, 4, 8]
    assert [c.prefix_built for c in r.chunks] == [True, False, False, False, True, False, True]
    for c in r.chunks:  # slots end at the last frame, 1 s each
        np.testing.assert_allclose(c.slot_starts, c.t_last - 8 + np.arange(8))
        # unseen slots (ending before the first frame in view, with the reference's 0.1 s slack) stay inactive
        np.testing.assert_array_equal(c.unseen, c.slot_starts + 1 + 0.1 < c.seen_start)
        assert not c.labels[c.unseen].any()
        assert 1 <= c.forwards <= 9 * 6  # <= (retain + 8 steps) x re-diffusions


def test_cropped_prefix_is_the_shorter_video(prompt, frames):
    full = prompt.prefix(QUERY, frames[:8], np.arange(8.0))
    short = prompt.prefix(QUERY, frames[:4], np.arange(4.0))
    view = full.view(2)
    np.testing.assert_array_equal(view.ids, short.ids)
    np.testing.assert_array_equal(view.positions, short.positions)
    np.testing.assert_array_equal(view.pixel_values, short.pixel_values)
    assert view.grid == short.grid == (2, 4, 4)


def test_correct_positions_equal_get_rope_index_of_the_full_sequence(tok, tiny_model, prompt, frames):
    full = prompt.prefix(QUERY, frames[:8], np.arange(8.0))
    view = full.view(3)
    slots = prompt.slot_ids(np.array([2] * 8))
    ids = np.concatenate([view.ids, slots])[None]
    want, _ = get_rope_index(ids, video_grid_thw=np.array([view.grid]), image_token_id=5, video_token_id=6)
    got = slot_positions(view, len(view.ids), len(slots), "correct")
    np.testing.assert_array_equal(got, want[:, 0, len(view.ids):])


def test_reference_positions_lag_by_the_cut_frame_groups(prompt, frames):
    full = prompt.prefix(QUERY, frames[:8], np.arange(8.0))  # 4 groups of 4x4 patches
    for groups in (1, 2, 4):
        view = full.view(groups)
        correct = slot_positions(view, len(view.ids), 16, "correct")
        ref = slot_positions(view, len(view.ids), 16, "reference", full.rope_delta())
        # each cut group had 4 merged tokens (2x2) but advanced the positions by max(2, 2) = 2: lag 2 per group
        np.testing.assert_array_equal(correct - ref, 2 * (4 - groups))


def test_runtime_scores_equal_training_layout_scores(tiny_model, prompt, frames):
    """The cached step's p(active) equals a plain forward of [prefix, slots x2] through model.prepare (the HF
    batch path with get_rope_index positions, as in training)."""
    full = prompt.prefix(QUERY, frames[:8], np.arange(8.0))
    view = full.view(3)
    labels = np.array([2, 2, 0, 1, 2, 2, 2, 1])
    stream = StrideStream(tiny_model, prompt, StreamConfig(chunk_size=2, max_window=8, stride=2))
    predict, _ = stream._chunk_predictor(full, stream._prefill(full), 3)
    batch = {"input_ids": np.concatenate([view.ids, prompt.slot_ids(labels)])[None],
             "pixel_values_videos": view.pixel_values, "video_grid_thw": np.array([view.grid])}
    want = window_probs(tiny_model, prompt.stride, batch)[0]
    np.testing.assert_allclose(predict(labels), want, atol=1e-5, rtol=0)


def test_runtime_prompt_matches_the_training_pipeline(tok_dir, tok, tiny_model, synth_dir, vision, tmp_path):
    """For a clip whose frames fall on whole seconds ([0, 7.25) s of a 4-fps video: 8 frames at 0..7 s,
    the last one at index 28), the Grain pipeline's STRIDE example starts with exactly
    the runtime's prefix tokens and pixel rows."""
    video = os.path.join(synth_dir, "videos", "synth_00000.mp4")
    sample = {"data": [{"type": "text", "content": QUERY},
                       {"type": "video", "path": video, "start_seconds": 0.0, "end_seconds": 7.25},
                       {"type": "activation_output", "entries": [
                           {"start_seconds": 2.0, "end_seconds": 4.0, "value": "<active>", "mask": True}]}]}
    index = tmp_path / "one.jsonl"
    index.write_text(json.dumps(sample) + "\n")
    cfg = PipelineConfig(index=str(index), tokenizer=tok_dir, format="stride", preprocess=vision, batch_size=1,
                         shuffle=False, length_buckets=(512,), stride=StrideWindowConfig(window=8))
    batch = next(iter(make_pipeline(cfg)))
    frames = read_video(video, fps=1.0).frames[:8]  # frames at 0, 1, ..., 7 s
    prompt = StridePrompt(tok, tiny_model.config, vision, StrideConfig.from_tokenizer(tok, window=8))
    prefix = prompt.prefix(QUERY, frames, np.arange(8.0))
    n = len(prefix.ids)
    np.testing.assert_array_equal(batch["input_ids"][0, :n], prefix.ids)
    np.testing.assert_array_equal(batch["position_ids"][:, 0, :n], prefix.positions)
    np.testing.assert_array_equal(batch["pixel_values_videos"], prefix.pixel_values)
    rest = batch["input_ids"][0, n:n + 16]
    assert set(rest.tolist()) <= set(prompt.stride.slot_token_ids)  # then the two slot copies


def test_future_slots_and_decoded_times_through_the_model(tok, tiny_model, vision, frames):
    """trigger_window_future > 0 and decoded (non-integer) frame times: the mega-window cache and a per-chunk
    prefill still agree, the grid has window + future slots anchored at the last frame's decoded time."""
    prompt = StridePrompt(tok, tiny_model.config, vision, StrideConfig.from_tokenizer(tok, window=6, future=2))
    times = np.arange(8) * 1.001 + 0.25
    cfg = StreamConfig(chunk_size=4, max_window=8, stride=4, confidence=0.55)
    mega = StrideStream(tiny_model, prompt, cfg).run(frames[:8], QUERY, times=times)
    full = StrideStream(tiny_model, prompt, cfg.replace(cache="chunk")).run(frames[:8], QUERY, times=times)
    assert [c.t_last for c in mega.chunks] == [times[3], times[7]]
    for a, b in zip(mega.chunks, full.chunks):
        assert a.labels.shape == (8,)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.p_active, b.p_active, atol=1e-5, rtol=0)
    # slot i starts at t_last - 6 + i (relative to the first frame's time, then shifted back by it)
    np.testing.assert_allclose(mega.chunks[1].slot_starts, (times[7] - times[0]) - 6 + np.arange(8) + times[0])
    assert mega.duration == times[-1]
