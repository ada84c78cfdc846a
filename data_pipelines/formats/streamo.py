"""Streamo `to-stream` conversion: raw QA (question/response times) -> per-second multi-turn chat.

Rules (Streamo's to-stream converter), with frame i = the turn showing `<is-(i+1)s>`:
- every frame starts `</Silence>`;
- a question at time q goes to frame q-1 (q=0 -> frame 0); a later question at the same frame replaces it;
- a response with st_time/end_time: frames st-1 .. end-1 are `</Standby>`, frame `end` (the turn after
  end_time) is `</Response> answer` (dropped when that turn is past the video);
- a response with only `time` t: `</Response> answer` at frame t-1;
- responses are applied in order, later ones overwrite earlier states;
- if no question maps to frame 0, the first question is also put at frame 0 (so it can appear twice);
- numeric times are cast with int() (seconds); strings parse as int, float*fps, MM:SS or HH:MM:SS.
Validation beyond the reference (bad-input policy): unparseable, negative, NaN times, and times past the
end of the video raise `AnnotationError` (the batch converter skips and counts them).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.synthetic.vocabulary import STREAMO_SYSTEM_PROMPT

SILENCE, STANDBY, RESPONSE = "</Silence>", "</Standby>", "</Response>"
STATE_TOKENS = (SILENCE, STANDBY, RESPONSE)
STREAM_PLACEHOLDER = "<stream>"
DEFAULT_QUESTION = "Find all significant events in the video and describe them."


def parse_time(value: Any, fps: float = 1.0, *, field: str = "time", source: str = "") -> int | None:
    """A Streamo time -> integer (seconds at fps=1). None/'' -> None. Raises AnnotationError when invalid."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise AnnotationError("bad_time", f"{field} must be a number or time string, got {value!r}", source)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            raise AnnotationError("nan_time", f"{field} is NaN", source)
        if isinstance(value, float) and math.isinf(value):
            raise AnnotationError("bad_time", f"{field} is infinite", source)
        t = int(value)
    elif isinstance(value, str):
        t = _parse_time_string(value.strip(), fps, field, source)
    else:
        raise AnnotationError("bad_time", f"{field} must be a number or time string, got {type(value).__name__}",
                              source)
    if t < 0 or (isinstance(value, (int, float)) and value < 0):
        raise AnnotationError("negative_time", f"{field} is negative ({value!r})", source)
    return t


def _parse_time_string(s: str, fps: float, field: str, source: str) -> int:
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        f = None
    if f is not None:
        if math.isnan(f):
            raise AnnotationError("nan_time", f"{field} is NaN ({s!r})", source)
        if f < 0:
            raise AnnotationError("negative_time", f"{field} is negative ({s!r})", source)
        if math.isinf(f):
            raise AnnotationError("bad_time", f"{field} is infinite", source)
        return int(f * fps)
    parts = s.split(":")
    if len(parts) in (2, 3):
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            nums = None
        if nums is not None and all(math.isfinite(n) for n in nums):
            if any(n < 0 for n in nums):
                raise AnnotationError("negative_time", f"{field} is negative ({s!r})", source)
            secs = nums[-1] + 60 * nums[-2] + (3600 * nums[0] if len(nums) == 3 else 0)
            return int(secs * fps)
    raise AnnotationError("bad_time", f"cannot parse {field} {s!r} (int, float, MM:SS or HH:MM:SS)", source)


def _frame(t: int) -> int:
    return max(0, t - 1)


def build_frame_states(num_frames: int, questions: list, responses: list, fps: float = 1.0,
                       source: str = "") -> tuple[list[str], dict[int, str]]:
    """Per-frame assistant states and {frame: question}. See the module docstring for the rules."""
    if num_frames <= 0:
        raise AnnotationError("empty_video", "video has no frames at the requested fps", source)
    states = [SILENCE] * num_frames
    qmap: dict[int, str] = {}

    def in_range(t: int, field: str):
        if _frame(t) >= num_frames:
            raise AnnotationError("time_out_of_range", f"{field}={t} s is past the end of the video "
                                  f"({num_frames} s at this fps)", source)

    for q in questions:
        if not isinstance(q, dict):
            raise AnnotationError("bad_field", "each question must be an object", source)
        t = parse_time(q.get("time"), fps, field="question.time", source=source)
        content = q.get("content") or ""
        if content and t is not None:
            in_range(t, "question.time")
            qmap[_frame(t)] = content
    for r in responses:
        if not isinstance(r, dict):
            raise AnnotationError("bad_field", "each response must be an object", source)
        content = r.get("content") or ""
        st = parse_time(r.get("st_time"), fps, field="response.st_time", source=source)
        end = parse_time(r.get("end_time"), fps, field="response.end_time", source=source)
        t = parse_time(r.get("time"), fps, field="response.time", source=source)
        if st is not None and end is not None:
            if end < st:
                raise AnnotationError("bad_span", f"response end_time {end} < st_time {st}", source)
            in_range(st, "response.st_time")
            in_range(end, "response.end_time")
            for i in range(_frame(st), min(_frame(end) + 1, num_frames)):
                states[i] = STANDBY
            resp = _frame(end) + 1
            if resp < num_frames and content:
                states[resp] = f"{RESPONSE} {content}"
        elif t is not None:
            in_range(t, "response.time")
            if content:
                states[_frame(t)] = f"{RESPONSE} {content}"
    return states, qmap


def _stream_interval(video_fps: float, fps: float) -> int:
    """Source frames per turn: int(video_fps / fps), at least 1 (the reference's sampling)."""
    return max(1, int(video_fps / fps)) if fps > 0 else 1


def stream_num_frames(total_frames: int, video_fps: float, fps: float = 1.0) -> int:
    """Turns in the stream: total_frames // int(video_fps / fps) (the reference's count)."""
    return total_frames // _stream_interval(video_fps, fps)


def stream_frame_indices(num_turns: int, total_frames: int, video_fps: float, fps: float = 1.0) -> np.ndarray:
    """The source frame shown at each turn: every int(video_fps / fps)-th frame, the last one repeated past the
    end (the reference tolerates one turn more than the video has)."""
    return np.minimum(np.arange(num_turns) * _stream_interval(video_fps, fps), total_frames - 1)


def to_stream(record: dict, num_frames: int, *, fps: float = 1.0, system_prompt: str | None = None,
              video_path: str | None = None, source: str = "") -> dict:
    """One raw Streamo record -> {"messages": [...], "videos": [path], video_name/task_type/source}."""
    if not isinstance(record, dict):
        raise AnnotationError("bad_record", "record must be a JSON object", source)
    questions, responses = record.get("question", []), record.get("response", [])
    if not isinstance(questions, list) or not isinstance(responses, list):
        raise AnnotationError("bad_field", "'question' and 'response' must be lists", source)
    states, qmap = build_frame_states(num_frames, questions, responses, fps, source)
    if 0 not in qmap:
        first = questions[0].get("content") if questions else None
        qmap[0] = first or DEFAULT_QUESTION
    messages = [{"role": "system", "content": STREAMO_SYSTEM_PROMPT if system_prompt is None else system_prompt}]
    for i in range(num_frames):
        tag = f"<{i}s-{i + 1}s>"
        user = f"{qmap[i]}\n{tag}\n{STREAM_PLACEHOLDER}" if i in qmap else f"{tag}\n{STREAM_PLACEHOLDER}"
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": states[i]}]
    out = {"messages": messages, "videos": [video_path or record_video_path(record, source)]}
    for key in ("video_name", "task_type", "source"):
        if record.get(key):
            out[key] = record[key]
    return out


def record_video_path(record: dict, source: str = "") -> str:
    path = record.get("video_path") or (record.get("videos") or [None])[0]
    if not path:
        raise AnnotationError("missing_field", "record has no 'video_path'", source)
    return path


def convert_record(record: dict, *, video_root: str, fps: float = 1.0, system_prompt: str | None = None,
                   source: str = "") -> dict:
    """Resolve the video (relative to video_root), count its turns with the PyAV probe, convert."""
    from data_pipelines.video import probe_video

    rel = record_video_path(record, source)
    path = rel if os.path.isabs(rel) else os.path.normpath(os.path.join(video_root, rel))
    info = probe_video(path)
    n = stream_num_frames(info.num_frames, info.fps, fps)
    return to_stream(record, n, fps=fps, system_prompt=system_prompt, video_path=rel, source=source)
