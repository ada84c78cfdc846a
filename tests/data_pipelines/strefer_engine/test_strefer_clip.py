"""Stage 1: PySceneDetect shots against the multi-shot video's recorded cuts, then fixed-length segments."""

import json
import os

import pytest

from strefer_helpers import MULTISHOT


def _ann(root, vid):
    with open(os.path.join(root, "annotations", vid + ".json")) as f:
        return json.load(f)


def test_shots_match_recorded_cuts(strefer_set):
    from data_pipelines.strefer.clip import detect_shots
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.synthetic.multishot import multishot_id

    vid = multishot_id(MULTISHOT)
    ann = _ann(strefer_set, vid)
    assert len(ann["cuts"]) == len(MULTISHOT) - 1
    shots = detect_shots(os.path.join(strefer_set, "videos", vid + ".mp4"), EngineConfig())
    assert [a for a, _ in shots[1:]] == ann["cuts"]  # every cut found at its exact frame, no extra one
    assert shots[0][0] == 0 and shots[-1][1] == ann["num_frames"]
    assert [b - a for a, b in shots] == [s["num_frames"] for s in ann["shots"]]


def test_single_shot_video_is_one_shot(strefer_set):
    from data_pipelines.strefer.clip import detect_shots
    from data_pipelines.strefer.config import EngineConfig

    for i in range(4):
        ann = _ann(strefer_set, f"synth_{i:05d}")
        shots = detect_shots(os.path.join(strefer_set, "videos", f"synth_{i:05d}.mp4"), EngineConfig())
        assert shots == [(0, ann["num_frames"])]


def test_split_shot_segments():
    from data_pipelines.strefer.clip import split_shot
    from data_pipelines.strefer.config import EngineConfig

    cfg = EngineConfig(segment_seconds=4.0, min_segment_seconds=2.0)
    # 4 fps: 16-frame segments; [10, 60) = 50 frames -> 16, 16, 16, and a 2-frame tail (0.5 s) dropped.
    assert split_shot(10, 60, 4.0, cfg) == ([(10, 26), (26, 42), (42, 58)], 1)
    # a 9-frame (2.25 s) tail is kept
    assert split_shot(0, 41, 4.0, cfg) == ([(0, 16), (16, 32), (32, 41)], 0)


def test_video_clips_ids_and_times(strefer_set):
    from data_pipelines.strefer.clip import video_clips
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.synthetic.multishot import multishot_id

    vid = multishot_id(MULTISHOT)
    clips, dropped = video_clips(os.path.join(strefer_set, "videos", vid + ".mp4"), EngineConfig(segment_seconds=8))
    ann = _ann(strefer_set, vid)
    starts = {sh["start_frame"] for sh in ann["shots"]}
    assert {c["start_frame"] for c in clips if c["segment"] == 0} == starts
    for c in clips:
        assert c["clip_id"] == f"{vid}/s{c['shot']:03d}c{c['segment']:03d}"
        assert c["start"] == c["start_frame"] / 4.0 and c["end"] == c["end_frame"] / 4.0
        assert c["end_frame"] - c["start_frame"] <= 32


@pytest.mark.parametrize("kind", ["truncated", "zero", "text", "missing"])
def test_bad_video_one_line(bad_videos, kind):
    from data_pipelines.errors import VideoDecodeError
    from data_pipelines.strefer.clip import video_clips
    from data_pipelines.strefer.config import EngineConfig

    with pytest.raises(VideoDecodeError) as e:
        video_clips(bad_videos[kind], EngineConfig())
    msg = str(e.value)
    assert "\n" not in msg and bad_videos[kind] in msg


def test_multishot_ground_truth_lines_up_with_its_pixels(strefer_set):
    """Each shot's single-shot masks, at the recorded offset, cover pixels of the entity's own colour (decoded
    from the multi-shot mp4), and the shots' backgrounds differ."""
    import numpy as np

    from data_pipelines.rle import rle_decode
    from data_pipelines.synthetic.multishot import multishot_id
    from data_pipelines.video import decode_frames

    vid = multishot_id(MULTISHOT)
    ms = _ann(strefer_set, vid)
    checked = 0
    for sh in ms["shots"]:
        ann = _ann(strefer_set, sh["vid"])
        rgb = {e["id"]: np.asarray(e["rgb"]) for e in ann["entities"]}
        local = [0, sh["num_frames"] // 2, sh["num_frames"] - 1]
        frames = decode_frames(os.path.join(strefer_set, "videos", vid + ".mp4"),
                               [sh["start_frame"] + k for k in local])
        for f, k in zip(frames, local):
            background = f[0, 0].astype(int)
            assert np.abs(background - np.asarray(sh["background"])).max() < 12
            for o in ann["frames"][k]["objects"]:
                m = rle_decode(o["rle"])
                if m.sum() >= 40:
                    assert np.abs(np.median(f[m], axis=0) - rgb[o["entity"]]).max() < 30
                    checked += 1
    assert checked >= 6
    assert len({tuple(sh["background"]) for sh in ms["shots"]}) == len(ms["shots"])
