"""The demo world (`data_pipelines/synthetic/demo_world.py`): frames, Streamo states and STRIDE targets of a
hand-written timeline, checked against values worked out by hand; random timing; the layout the evaluations read."""

import json
import os

import numpy as np
import pytest

from data_pipelines.formats.streamo import to_stream
from data_pipelines.synthetic.demo_world import (
    BACKGROUND, COLOURS, FPS, DemoWorldConfig, generate_demo_world, render, sample_timeline, stride_samples,
    streamo_raw,
)
from stvl_jax.errors import ConfigError

# 10 s; the red block shows in the top row from 3 s, jumps to the right half at 5 s, is gone at 7 s
TIMELINE = {"duration": 10, "colour": "red", "row": 0, "shown": [3, 7], "right_from": 5}


def _gt(tl):
    return {"vid": "v", "video": "../videos/v.mp4", "fps": FPS, "duration": float(tl["duration"]),
            "height": 128, "width": 128, "block": tl}


def test_frames_fill_one_quadrant_while_shown():
    frames = render(TIMELINE)
    assert len(frames) == 40 and frames[0].shape == (128, 128, 3)
    red = np.array(COLOURS["red"], np.uint8)
    for t, quadrant in ((2.75, None), (3.0, (0, 0)), (4.75, (0, 0)), (5.0, (0, 1)), (6.75, (0, 1)), (7.0, None)):
        f = frames[int(t * FPS)]
        if quadrant is None:
            assert (f == BACKGROUND).all(), t
            continue
        r, c = quadrant
        assert (f[64 * r:64 * (r + 1), 64 * c:64 * (c + 1)] == red).all(), t
        assert (f == red).all(-1).sum() == 64 * 64, t  # nothing else lit


def _states(raw):
    stream = to_stream(raw, 10, system_prompt="s", video_path="v.mp4")
    return [m["content"].split(" ")[0] for m in stream["messages"] if m["role"] == "assistant"]


def test_streamo_states_follow_the_frames():
    by_task = {r["task_type"]: r for r in streamo_raw(_gt(TIMELINE))}
    S, W, R = "</Silence>", "</Standby>", "</Response>"
    # turn t shows the frame at t s: first shown at turn 3, first on the right at turn 5, gone at turn 7
    assert _states(by_task["event_appear"]) == [S, S, S, R, S, S, S, S, S, S]
    assert _states(by_task["event_right"]) == [S, S, S, S, S, R, S, S, S, S]
    assert _states(by_task["event_gone"]) == [S, S, S, W, W, W, W, R, S, S]
    assert all(r["question"][0]["time"] == "1" for r in by_task.values())  # asked at the first turn


def test_counterfactual_twins_absent_and_staying_block():
    absent = {r["task_type"]: r for r in streamo_raw(_gt({**TIMELINE, "shown": None, "right_from": None}))}
    assert set(absent) == {"event_appear", "event_right", "event_gone"}
    assert all(r["response"] == [] for r in absent.values())  # all silence: the event never comes
    stays = {r["task_type"] for r in streamo_raw(_gt({**TIMELINE, "shown": [3, 10], "right_from": None}))}
    assert stays == {"event_appear", "event_right"}  # never gone: not asked; never right: no response


def test_stride_targets_are_the_seconds_shown():
    samples = stride_samples(_gt(TIMELINE), np.random.default_rng(0))
    targets = {(s["action"], s["data"][0]["content"]): s["data"][2]["entries"][0] for s in samples}
    assert {k: (v["start_seconds"], v["end_seconds"]) for k, v in targets.items()} == {
        ("visible", "When is the block visible?"): (3.0, 6.99),
        ("right", "When is the block on the right?"): (5.0, 6.99)}
    assert {s["cut"] for s in samples if s["action"] == "visible"} == {"before", "inside", "after"}


def test_timing_is_random_per_video():
    cfg = DemoWorldConfig()
    tls = [sample_timeline(np.random.default_rng(i), cfg) for i in range(400)]
    starts = [t["shown"][0] for t in tls if t["shown"]]
    assert 0.12 < 1 - len(starts) / len(tls) < 0.28  # p_absent 0.2
    assert len(set(starts)) >= 8  # appears at many different seconds
    jumps = [t["right_from"] - t["shown"][0] for t in tls
             if t["shown"] and t["right_from"] not in (None, t["shown"][0])]
    assert len(set(jumps)) >= 4


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="p_absent"):
        DemoWorldConfig(p_absent=1.5)
    with pytest.raises(ConfigError, match="min_duration"):
        DemoWorldConfig(min_duration=5)


def test_world_layout_is_what_the_evaluations_read(tmp_path):
    from stvl_jax.eval.stride_eval import synthetic_samples

    m = generate_demo_world(str(tmp_path), DemoWorldConfig(num_videos=10, seed=3))
    assert m["splits"]["test"] == ["synth_00009"] and len(m["splits"]["train"]) == 8
    raw = json.loads((tmp_path / "streamo" / "raw_train.json").read_text())
    assert {r["task_type"] for r in raw} <= {"event_appear", "event_right", "event_gone"}
    assert all(os.path.isfile(tmp_path / "streamo" / r["video_path"]) for r in raw)
    for split in ("train", "val", "test"):
        for s in synthetic_samples(str(tmp_path), split):
            assert os.path.isfile(s["video"]) and s["tgt"][1] - s["tgt"][0] >= 1.99
