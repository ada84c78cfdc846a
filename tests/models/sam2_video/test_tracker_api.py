"""`track()` (the one-call API: prompts in frame order, then forward and reverse propagation) vs transformers'
session driven the same way (each frame's final output; fp32 memory storage on both sides, see
test_tracking_vs_transformers.py), and malformed inputs as one clear `InputError` line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from stvl_jax.errors import InputError  # noqa: E402
from stvl_jax.models.sam2.tracker import Prompt, Tracker, track  # noqa: E402
from test_tracking_vs_transformers import T, _hf_run, _pixels  # noqa: E402
from video_helpers import IMAGE, flax_video_model, hf_fp32_memory  # noqa: E402


@pytest.mark.slow  # ~50-90 s (compiles); the same steps are checked frame by frame in test_tracking_vs_transformers
def test_track_both_directions_matches_transformers(monkeypatch):
    bank_dtype = hf_fp32_memory(monkeypatch)
    pixels = _pixels(2)
    steps = [(3, 4, ("points", [[40.0, 20.0]], [1])), (6, 9, ("box", [5.0, 30.0, 33.0, 60.0], None))]
    ref = _hf_run(pixels, steps, [(False, None), (True, None)])
    final = {}
    for frame, low, scores, ids in ref:  # the latest output of every frame, objects in id order
        full = np.zeros((2, IMAGE // 4, IMAGE // 4), np.float32)
        sc = np.zeros(2, np.float32)
        for k, i in enumerate(ids):
            full[[4, 9].index(i)], sc[[4, 9].index(i)] = low[k], scores[k]
        final[frame] = (full, sc)
    got = track(flax_video_model(), pixels, {(3, 4): ([[40.0, 20.0]], [1]), (6, 9): Prompt(box=[5, 30, 33, 60])},
                both_directions=True, cond_capacity=2, bank_dtype=bank_dtype)
    assert got.object_ids == (4, 9) and got.computed.all() and sorted(final) == list(range(T))
    for frame, (low, scores) in final.items():
        assert np.abs(got.low_res_logits[frame] - low).max() <= 1e-4, frame
        assert np.array_equal(got.low_res_logits[frame] > 0, low > 0), frame
        assert np.abs(got.object_score_logits[frame] - scores).max() <= 1e-4, frame


@pytest.mark.parametrize("bad, match", [
    (lambda m, px: Tracker(m, px[:, :, :32], [1]), "pixel_values has shape"),
    (lambda m, px: track(m, px, {}), "no prompts"),
    (lambda m, px: track(m, px, {(T, 1): ([[1.0, 1.0]], [1])}), "outside the video"),
    (lambda m, px: track(m, px, {(0, 1): Prompt(box=[30, 30, 10, 10])}), "box"),
    (lambda m, px: track(m, px, {(0, 1): ([[1.0, 1.0]], [5])}), "labels must be 1"),
    (lambda m, px: track(m, px, {(0, 1): Prompt(mask=np.ones((4, 4)), box=[0, 0, 1, 1])}), "cannot be combined"),
    (lambda m, px: track(m, px, {(0, 1): Prompt()}), "empty"),
    (lambda m, px: Tracker(m, px, [1]).add_prompts(0, {2: ([[1.0, 1.0]], [1])}), "object id 2"),
    (lambda m, px: Tracker(m, px, [1]).propagate().__next__(), "no prompted frame"),
    (lambda m, px: track(m, px, {(0, 1): ([[1.0, 1.0]], [1]), (1, 1): ([[1.0, 1.0]], [1])}, cond_capacity=1),
     "cond_capacity=1"),
])
def test_bad_input_is_one_clear_error(bad, match):
    with pytest.raises(InputError, match=match):
        bad(flax_video_model(), _pixels(0))
