"""Validity rules of a Streamo stream-format record (`stvl data streamo`'s output): what training
(`grain.examples`) and evaluation (`stvl eval streamo`) both accept.

A record is {"messages": [{"role", "content": str}, ...], "videos": [path, ...]}; each `<stream>` in a message
is one frame, shown at one turn per second of the video (`formats.streamo.stream_frame_indices`).
"""

from __future__ import annotations

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.formats.streamo import STREAM_PLACEHOLDER, stream_frame_indices, stream_num_frames

ROLES = ("system", "user", "assistant")


def stream_record_parts(rec, source: str = "") -> tuple[str, list[dict], int]:
    """-> (video path as written, messages, number of `<stream>` frames); AnnotationError naming `source` when a
    field is missing (`missing_field`) or a message is malformed (`bad_field`)."""
    videos = rec.get("videos") if isinstance(rec, dict) else None
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list) or not isinstance(videos, list) \
            or not videos:
        raise AnnotationError("missing_field", "stream record needs 'messages' and 'videos'", source)
    if not isinstance(videos[0], str) or not videos[0]:
        raise AnnotationError("missing_field", "media part has no 'path'", source)
    msgs = rec["messages"]
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise AnnotationError("bad_field", f"bad message {str(m)[:80]!r}", source)
    n_stream = sum(m["content"].count(STREAM_PLACEHOLDER) for m in msgs)
    if n_stream == 0:
        raise AnnotationError("missing_field", "stream record has no <stream> turns", source)
    return videos[0], msgs, n_stream


def stream_turn_indices(n_stream: int, num_frames: int, video_fps: float, fps: float = 1.0,
                        source: str = "") -> np.ndarray:
    """The source frame of each of `n_stream` turns; AnnotationError `time_out_of_range` when the video is too
    short for them (the reference tolerates one turn more than the video has: the last frame repeats)."""
    n_turns = stream_num_frames(num_frames, video_fps, fps)
    if n_stream > n_turns + 1:
        raise AnnotationError("time_out_of_range", f"{n_stream} stream turns but the video has {n_turns} s", source)
    return stream_frame_indices(n_stream, num_frames, video_fps, fps)
