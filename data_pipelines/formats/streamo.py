"""Streamo `to-stream` conversion: raw QA (question/response times) -> per-second multi-turn chat.

Rules (those of Streamo's own converter), with frame i = the turn showing `<is-(i+1)s>`:
- every frame starts `</Silence>`;
- a question at time q goes to frame q-1 (q=0 -> frame 0); a later question at the same frame replaces it;
- a response with st_time/end_time: frames st-1 .. end-1 are `</Standby>`, frame `end` (the turn after
  end_time) is `</Response> answer`;
- a response with only `time` t: `</Response> answer` at frame t-1;
- responses are applied in order, later ones overwrite earlier states;
- if no question maps to frame 0, the first question is also put at frame 0 (so it can appear twice);
- numeric times are cast with int() (seconds); strings parse as int, float*fps, MM:SS or HH:MM:SS;
- the system message is Streamo's own prompt, verbatim (`STREAMO_SYSTEM_PROMPT`), unless one is given;
- the video is `video_path`, else `videos` (a list: its first path; a string: that path).
Past the last turn (as the reference): a question is dropped; a response keeps its `</Standby>` turns inside
the video and loses its answer. The record is kept and each dropped item reported (`dropped=`: reasons
`question_past_end`, `response_past_end`); `past_end="refuse"` refuses a record with a time past the video
instead (`AnnotationError` time_out_of_range). An answer whose turn is the one after the last is dropped in
both modes (the annotation itself is inside the video).
Validation beyond the reference (bad-input policy: no made-up target): `AnnotationError` (the batch converter
skips and counts it) for unparseable, negative and NaN times, a span ending before it starts, a record without
`question` or `response` (reasons `missing_question`, `missing_response`; the reference silently made all-
`</Silence>` streams and put a generic question over event-specific answers), a question or response without
text (`missing_content`) or without a time (`missing_time`: a question needs `time`, a response `st_time` and
`end_time`, or `time`; the reference silently dropped them), and a non-string text (`bad_field`). An explicitly
empty `response: []` is kept: the annotation says the question is never answered in the video. The reference's
generic question (`DEFAULT_QUESTION`) is used only when asked for (`default_question=`), for records with no
question at all.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from data_pipelines.errors import AnnotationError

SILENCE, STANDBY, RESPONSE = "</Silence>", "</Standby>", "</Response>"
STATE_TOKENS = (SILENCE, STANDBY, RESPONSE)
STREAM_PLACEHOLDER = "<stream>"
# The reference converter's question for records without one; here only on request (`default_question=`,
# `stvl data streamo --default-question`), never by default: over event-specific answers it is a made-up prompt.
DEFAULT_QUESTION = "Find all significant events in the video and describe them."
PAST_END_MODES = ("drop", "refuse")

# Streamo's system prompt, character for character (leading newline and trailing spaces included): the one its
# converter writes into every training stream and its inference script sends, so a model trained here sees what
# Streamo checkpoints saw. The demo and the probes pass their own one-line prompt.
STREAMO_SYSTEM_PROMPT = (
    "\n"
    "You are a helpful assistant specializing in streaming video analysis. \n"
    "You will receive input frame by frame, each labeled with absolute time intervals \n"
    "in the exact format <Xs-Ys> (e.g., <0s-1s>). Follow these rules precisely:\n"
    "\n"
    "1. Use </Silence> when:\n"
    "   - No relevant event has started, OR\n"
    "   - The current input is irrelevant to the given question.  \n"
    "\n"
    "2. Use </Standby> when:\n"
    "   - An event is in progress but has not yet completed, OR\n"
    "   - The current input is relevant but the question cannot yet be answered.  \n"
    "\n"
    "3. Use </Response> only when:\n"
    "   - An event has fully concluded, OR\n"
    "   - The available information is sufficient to fully answer the question.\n"
    "   Provide a complete description at this point.  \n"
    "\n"
    "Do not provide partial answers or speculate beyond the given information.  \n"
    "Whenever you deliver an answer, begin with </Response>.\n"
)


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


def build_frame_states(num_frames: int, questions: list, responses: list, fps: float = 1.0, source: str = "",
                       *, past_end: str = "drop", dropped: list | None = None) -> tuple[list[str], dict[int, str]]:
    """Per-frame assistant states and {frame: question}. See the module docstring for the rules; `dropped`
    (a list) receives one `AnnotationError` per question or response dropped past the last turn."""
    if past_end not in PAST_END_MODES:
        raise ValueError(f"past_end must be one of {PAST_END_MODES}, got {past_end!r}")
    if num_frames <= 0:
        raise AnnotationError("empty_video", "video has no frames at the requested fps", source)
    states = [SILENCE] * num_frames
    qmap: dict[int, str] = {}
    last = num_frames - 1

    def past_the_end(kind: str, field: str, t: int, what: str) -> None:
        """A time past the last turn: refused, or dropped and reported."""
        msg = f"{field}={t} s is past the end of the video ({num_frames} turns at {fps:g} fps)"
        if past_end == "refuse":
            raise AnnotationError("time_out_of_range", msg, source)
        if dropped is not None:
            dropped.append(AnnotationError(f"{kind}_past_end", f"{msg}: {what}", source))

    for i, q in enumerate(questions):
        content = _item_text(q, "question", i, source)
        t = parse_time(q.get("time"), fps, field="question.time", source=source)
        if t is None:
            raise AnnotationError("missing_time", f"question {i} has no time ({_times(q, 'time')})", source)
        if _frame(t) > last:
            past_the_end("question", "question.time", t, "question dropped")
        else:
            qmap[_frame(t)] = content
    for i, r in enumerate(responses):
        content = _item_text(r, "response", i, source)
        st = parse_time(r.get("st_time"), fps, field="response.st_time", source=source)
        end = parse_time(r.get("end_time"), fps, field="response.end_time", source=source)
        t = parse_time(r.get("time"), fps, field="response.time", source=source)
        if (st is None or end is None) and t is None:
            raise AnnotationError("missing_time", f"response {i} needs st_time and end_time, or time "
                                  f"({_times(r, 'st_time', 'end_time', 'time')})", source)
        if st is not None and end is not None:
            if end < st:
                raise AnnotationError("bad_span", f"response end_time {end} < st_time {st}", source)
            if _frame(st) > last:
                past_the_end("response", "response.st_time", st, "response dropped")
            elif _frame(end) > last:
                past_the_end("response", "response.end_time", end, "answer dropped, standby turns inside the "
                             "video kept")
            for k in range(_frame(st), min(_frame(end) + 1, num_frames)):
                states[k] = STANDBY
            resp = _frame(end) + 1
            if resp <= last:
                states[resp] = f"{RESPONSE} {content}"
            elif resp == num_frames and dropped is not None:  # the turn after the last one
                dropped.append(AnnotationError(
                    "response_past_end", f"response.end_time={end} s ends the video: its answer turn would be "
                    f"the one after the last ({num_frames} turns at {fps:g} fps), answer dropped", source))
        else:
            if _frame(t) > last:
                past_the_end("response", "response.time", t, "answer dropped")
            else:
                states[_frame(t)] = f"{RESPONSE} {content}"
    return states, qmap


def _item_text(item, kind: str, i: int, source: str) -> str:
    """A question's or response's `content`: a non-empty string (the reference skipped empty ones silently)."""
    if not isinstance(item, dict):
        raise AnnotationError("bad_field", f"each {kind} must be an object, {kind} {i} is a "
                              f"{type(item).__name__}", source)
    content = item.get("content")
    if content is None or (isinstance(content, str) and not content.strip()):
        raise AnnotationError("missing_content", f"{kind} {i} has no content", source)
    if not isinstance(content, str):
        raise AnnotationError("bad_field", f"{kind} {i} content must be a string, got {type(content).__name__}",
                              source)
    return content


def _times(item: dict, *fields: str) -> str:
    return ", ".join(f"{f}={item.get(f)!r}" for f in fields)


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
              video_path: str | None = None, source: str = "", past_end: str = "drop",
              dropped: list | None = None, default_question: str | None = None) -> dict:
    """One raw Streamo record -> {"messages": [...], "videos": [path], video_name/task_type/source}.

    `system_prompt`: None -> Streamo's own (`STREAMO_SYSTEM_PROMPT`). `past_end`, `dropped`: `build_frame_states`.
    `default_question`: None -> a record without a question is refused; a text (e.g. the reference's
    `DEFAULT_QUESTION`) -> it opens the stream of such a record.
    """
    if default_question is not None and not (isinstance(default_question, str) and default_question.strip()):
        raise ValueError(f"default_question must be a non-empty string or None, got {default_question!r}")
    questions, responses = record_qa(record, source, default_question=default_question is not None)
    states, qmap = build_frame_states(num_frames, questions, responses, fps, source, past_end=past_end,
                                      dropped=dropped)
    if 0 not in qmap:
        qmap[0] = questions[0]["content"] if questions else default_question
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


def record_qa(record, source: str = "", *, default_question: bool = False) -> tuple[list, list]:
    """The record's (questions, responses) lists. Raises AnnotationError when either is absent or null, or the
    question list is empty (unless `default_question`); items are checked by `build_frame_states`."""
    if not isinstance(record, dict):
        raise AnnotationError("bad_record", f"record must be a JSON object, got a {type(record).__name__}", source)
    questions, responses = record.get("question"), record.get("response")
    if questions is None and default_question:
        questions = []
    if questions is None or (questions == [] and not default_question):
        raise AnnotationError("missing_question", "record has no 'question' (a list of {content, time}); no "
                              "default question is put over its answers", source)
    if responses is None:
        raise AnnotationError("missing_response", "record has no 'response' (a list of {content, st_time, "
                              "end_time | time}; [] for a question never answered in the video)", source)
    if not isinstance(questions, list) or not isinstance(responses, list):
        raise AnnotationError("bad_field", f"'question' and 'response' must be lists, got "
                              f"{type(questions).__name__} and {type(responses).__name__}", source)
    return questions, responses


def record_video_path(record: dict, source: str = "") -> str:
    """`video_path`, else `videos`: a list's first path, or a string as the one path."""
    if not isinstance(record, dict):
        raise AnnotationError("bad_record", f"record must be a JSON object, got a {type(record).__name__}", source)
    path = record.get("video_path")
    if not path:
        videos = record.get("videos")
        path = videos[0] if isinstance(videos, list) and videos else videos
    if not path:
        raise AnnotationError("missing_field", "record has no 'video_path' (nor 'videos')", source)
    if not isinstance(path, str):
        raise AnnotationError("bad_field", f"the video path must be a string, got {type(path).__name__}", source)
    return path


def convert_record(record: dict, *, video_root: str, fps: float = 1.0, system_prompt: str | None = None,
                   source: str = "", past_end: str = "drop", dropped: list | None = None,
                   default_question: str | None = None) -> dict:
    """Resolve the video (relative to video_root), count its turns with the PyAV probe, convert (`to_stream`)."""
    from data_pipelines.video import probe_video

    rel = record_video_path(record, source)
    record_qa(record, source, default_question=default_question is not None)  # before reading the video
    path = rel if os.path.isabs(rel) else os.path.normpath(os.path.join(video_root, rel))
    info = probe_video(path)
    n = stream_num_frames(info.num_frames, info.fps, fps)
    return to_stream(record, n, fps=fps, system_prompt=system_prompt, video_path=rel, source=source,
                     past_end=past_end, dropped=dropped, default_question=default_question)
