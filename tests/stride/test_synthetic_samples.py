"""The synthetic STRIDE samples the recipe trains on: events long enough for 1-s slots, clips whose frames the
pipeline places exactly 1 s apart (the inference frame rate), cut positions relative to the event."""

import json
import math
import os

import numpy as np

from data_pipelines.formats.stride import clip_frame_count
from data_pipelines.synthetic.derived import whole_second_clip_end


def _samples(synth_dir, split="train"):
    with open(os.path.join(synth_dir, "stride", f"{split}.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_clip_frames_are_one_second_apart_and_events_span_two_slots(synth_dir):
    rows = [r for split in ("train", "val", "test") for r in _samples(synth_dir, split)]
    assert len(rows) > 20
    for r in rows:
        video, entries = r["data"][1], r["data"][2]["entries"]
        target = next(e for e in entries if e["value"] == "<active>")
        assert target["end_seconds"] - target["start_seconds"] >= 2.0
        fps = video["fps"]
        start, end = video["start_seconds"], video["end_seconds"]
        n = clip_frame_count(end - start, 1.0, 16)
        # the pipeline's decode: an even count spread from the first to the last source frame of [start, end)
        first, last = math.ceil(start * fps - 1e-6), math.ceil(end * fps - 1e-6) - 1
        idx = np.linspace(first, last, n).round()
        np.testing.assert_array_equal(np.diff(idx), fps)  # one second between frames
        s, e = target["start_seconds"], target["end_seconds"]
        assert {"before": end <= s - 0.25, "inside": s + 0.5 <= end <= e, "after": end >= e + 0.5}[r["cut"]]


def test_whole_second_clip_end_choices():
    rng = np.random.default_rng(0)
    # from 2.25 s at 4 fps: ends 2.25 + (n - 1) + 0.25 for n = 2, 4, ...: 3.5, 5.5, 7.5, ...
    ends = {whole_second_clip_end(2.25, 4.0, 8.0, 4.0, 16, rng) for _ in range(50)}
    assert ends == {5.5, 7.5}
    assert whole_second_clip_end(2.25, 3.6, 5.4, 4.0, 16, rng) is None
    assert whole_second_clip_end(0.0, 0.0, 100.0, 4.0, 4, rng) in (1.25, 3.25)
