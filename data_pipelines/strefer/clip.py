"""Stage 1: a video -> shots (PySceneDetect) -> segments of `segment_seconds`.

A clip is a plain dict (JSON-serializable, so Beam can move it between workers):
    {"clip_id": "<video stem>/s<shot>c<segment>", "video": path, "video_id": stem, "shot": i, "segment": j,
     "start_frame": a, "end_frame": b (exclusive), "start": a / fps, "end": b / fps, "fps": fps}
"""

from __future__ import annotations

import os

from data_pipelines.errors import VideoDecodeError
from data_pipelines.strefer.config import EngineConfig
from data_pipelines.video import probe_video


def detect_shots(path: str, cfg: EngineConfig) -> list[tuple[int, int]]:
    """Shots as [start, end) frame ranges covering the video (one shot when no cut is found).

    PySceneDetect over the PyAV backend (the one the project already decodes with; no OpenCV needed)."""
    import logging

    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # one "Detecting scenes..." line per video

    info = probe_video(path)  # VideoDecodeError naming the file for missing/empty/garbage input
    if cfg.shot_detector == "content":
        detector = ContentDetector(threshold=cfg.shot_threshold, min_scene_len=cfg.min_shot_frames)
    else:
        detector = AdaptiveDetector(adaptive_threshold=cfg.shot_threshold, min_scene_len=cfg.min_shot_frames)
    try:
        video = open_video(path, backend="pyav")
        manager = SceneManager()
        manager.add_detector(detector)
        manager.detect_scenes(video, show_progress=False)
        scenes = manager.get_scene_list(start_in_scene=True)
        read = int(video.frame_number)
    except Exception as e:  # the decoder's own errors on a damaged stream
        raise VideoDecodeError(path, f"shot detection failed ({type(e).__name__}: {e})") from None
    # PyAV stops quietly at a truncated file's end: compare with the container's count (small slack for
    # containers whose count is estimated from the duration).
    if read < info.num_frames - max(2, info.num_frames // 50):
        raise VideoDecodeError(path, f"decoding stopped at frame {read} of {info.num_frames} (truncated or "
                                     f"corrupt file)")
    shots = [(int(s.frame_num), min(int(e.frame_num), info.num_frames)) for s, e in scenes]
    shots = [(a, b) for a, b in shots if b > a]
    return shots or [(0, info.num_frames)]


def split_shot(a: int, b: int, fps: float, cfg: EngineConfig) -> tuple[list[tuple[int, int]], int]:
    """[a, b) -> (segments of round(segment_seconds * fps) frames, how many short tails were dropped (0/1)).

    The last piece is kept when it lasts at least `min_segment_seconds`."""
    step = max(1, round(cfg.segment_seconds * fps))
    min_len = max(1, round(cfg.min_segment_seconds * fps))
    out, dropped = [], 0
    for s in range(a, b, step):
        e = min(s + step, b)
        if e - s >= min_len:
            out.append((s, e))
        else:
            dropped += 1
    return out, dropped


def video_clips(path: str, cfg: EngineConfig, *, local_path: str | None = None) -> tuple[list[dict], int]:
    """Every clip of one video, in order -> (clips, short tails dropped). `local_path`: a local copy of a remote
    `path` to decode (the clips still name `path`)."""
    local_path = local_path or path
    info = probe_video(local_path)
    stem = os.path.splitext(os.path.basename(path))[0]
    clips, dropped = [], 0
    for i, (a, b) in enumerate(detect_shots(local_path, cfg)):
        segs, d = split_shot(a, b, info.fps, cfg)
        dropped += d
        for j, (s, e) in enumerate(segs):
            clips.append({"clip_id": f"{stem}/s{i:03d}c{j:03d}", "video": path, "video_id": stem, "shot": i,
                          "segment": j, "start_frame": s, "end_frame": e, "start": round(s / info.fps, 6),
                          "end": round(e / info.fps, 6), "fps": info.fps})
    return clips, dropped
