"""Streamo to-stream: one test per rule, expected states written by hand from the rules of the reference converter
(maifoundations/Streamo scripts/convert_streaming_video.py, `to-stream`)."""

import inspect
import json
import math

import pytest

from data_pipelines.errors import AnnotationError
from data_pipelines.formats.streamo import (
    DEFAULT_QUESTION, RESPONSE, SILENCE, STANDBY, build_frame_states, parse_time, record_video_path,
    stream_frame_indices, stream_num_frames, to_stream,
)

S, B = SILENCE, STANDBY


def states(n, qs, rs, fps=1.0):
    return build_frame_states(n, qs, rs, fps)


def test_question_at_q_goes_to_frame_q_minus_1_and_q0_to_frame_0():
    _, qmap = states(10, [{"content": "A", "time": "5"}, {"content": "B", "time": "0"}], [])
    assert qmap == {4: "A", 0: "B"}


def test_span_is_standby_and_response_on_the_turn_after_end():
    st, _ = states(10, [], [{"content": "ans", "st_time": 3, "end_time": 5}])
    assert st == [S, S, B, B, B, f"{RESPONSE} ans", S, S, S, S]


def test_reference_example_from_the_streamo_repository():
    # dataset/example: question "5", response st 5.0 end 6.0 -> Standby at <4s-5s>, <5s-6s>; Response at <6s-7s>
    rec = {"video_path": "v.mp4", "question": [{"content": "Q?", "time": "5"}],
           "response": [{"content": "R.", "st_time": 5.0, "end_time": 6.0, "time": ""}]}
    out = to_stream(rec, 8)
    users = [m["content"] for m in out["messages"] if m["role"] == "user"]
    assistants = [m["content"] for m in out["messages"] if m["role"] == "assistant"]
    assert assistants == [S, S, S, S, B, B, f"{RESPONSE} R.", S]
    assert users[0] == "Q?\n<0s-1s>\n<stream>"  # first question also at frame 0
    assert users[4] == "Q?\n<4s-5s>\n<stream>"
    assert users[1] == "<1s-2s>\n<stream>"
    assert out["videos"] == ["v.mp4"] and out["messages"][0]["role"] == "system"


def test_single_time_response_at_t_minus_1():
    st, _ = states(6, [], [{"content": "now", "time": "4"}])
    assert st == [S, S, S, f"{RESPONSE} now", S, S]


def test_first_question_not_duplicated_when_something_maps_to_frame_0():
    out = to_stream({"video_path": "v", "question": [{"content": "A", "time": "3"}, {"content": "B", "time": "1"}],
                     "response": []}, 4)
    users = [m["content"] for m in out["messages"] if m["role"] == "user"]
    assert users[0] == "B\n<0s-1s>\n<stream>" and users[2] == "A\n<2s-3s>\n<stream>"


@pytest.mark.parametrize("question", [{}, {"question": None}, {"question": []}], ids=["absent", "null", "empty"])
def test_a_record_without_a_question_is_refused_not_given_a_default(question):
    """The reference puts its generic question at frame 0 of such a record, over answers about specific events."""
    rec = {"video_path": "v", "response": [{"content": "The red circle enters.", "time": "2"}], **question}
    with pytest.raises(AnnotationError) as e:
        to_stream(rec, 3)
    assert e.value.reason == "missing_question" and "no default question" in str(e.value)


def test_the_reference_default_question_only_when_asked():
    rec = {"video_path": "v", "response": [{"content": "A man walks in.", "time": "2"}]}
    for r in (rec, {**rec, "question": []}):
        out = to_stream(r, 2, default_question=DEFAULT_QUESTION)
        assert out["messages"][1]["content"] == "Find all significant events in the video and describe them." \
            "\n<0s-1s>\n<stream>"
        assert out["messages"][4]["content"] == f"{RESPONSE} A man walks in."
    out = to_stream({**rec, "question": [{"content": "Q", "time": "1"}]}, 2, default_question="Unused")
    assert out["messages"][1]["content"] == "Q\n<0s-1s>\n<stream>"  # real questions win
    with pytest.raises(ValueError, match="default_question"):
        to_stream(rec, 2, default_question=" ")


@pytest.mark.parametrize("response", [{}, {"response": None}], ids=["absent", "null"])
def test_a_record_without_a_response_is_refused_not_made_all_silence(response):
    rec = {"video_path": "v", "question": [{"content": "When does it stop?", "time": "1"}], **response}
    with pytest.raises(AnnotationError) as e:
        to_stream(rec, 3)
    assert e.value.reason == "missing_response"


def test_an_explicitly_empty_response_list_is_a_question_never_answered():
    out = to_stream({"video_path": "v", "question": [{"content": "Q", "time": "1"}], "response": []}, 3)
    assert [m["content"] for m in out["messages"] if m["role"] == "assistant"] == [S, S, S]


@pytest.mark.parametrize("response", [
    {"content": "x", "time": None}, {"content": "x", "time": ""}, {"content": "x"},
    {"content": "x", "st_time": None, "end_time": None, "time": None}, {"content": "x", "st_time": 2, "time": ""},
    {"content": "x", "end_time": 3},
], ids=["time-null", "time-empty", "no-times", "all-null", "st-only", "end-only"])
def test_a_response_without_a_time_is_refused_not_dropped(response):
    """The reference skips such a response silently, leaving `</Silence>` where the annotation had an answer."""
    with pytest.raises(AnnotationError) as e:
        states(5, [], [response])
    assert e.value.reason == "missing_time" and "response 0 needs st_time and end_time, or time" in str(e.value)


def test_a_half_span_with_a_time_uses_the_time_as_the_reference():
    st, _ = states(5, [], [{"content": "x", "st_time": 2, "end_time": None, "time": "3"}])
    assert st == [S, S, f"{RESPONSE} x", S, S]


@pytest.mark.parametrize("question", [{"content": "Q"}, {"content": "Q", "time": None}, {"content": "Q", "time": ""}])
def test_a_question_without_a_time_is_refused(question):
    with pytest.raises(AnnotationError) as e:
        states(5, [question], [])
    assert e.value.reason == "missing_time" and "question 0 has no time" in str(e.value)


@pytest.mark.parametrize("item,reason", [
    ({"time": "2"}, "missing_content"), ({"content": "", "time": "2"}, "missing_content"),
    ({"content": "  ", "time": "2"}, "missing_content"), ({"content": None, "time": "2"}, "missing_content"),
    ({"content": 5, "time": "2"}, "bad_field"), ({"content": ["a"], "time": "2"}, "bad_field"),
    ("text", "bad_field"), (["a", 2], "bad_field"),
])
def test_questions_and_responses_need_text(item, reason):
    """The reference skips a question or response without text silently (a span without text still wrote its
    `</Standby>` turns, then no answer)."""
    for qs, rs, kind in (([item], [], "question"), ([], [item], "response")):
        with pytest.raises(AnnotationError) as e:
            states(5, qs, rs)
        assert e.value.reason == reason and f"{kind} 0" in str(e.value)


def test_a_record_that_is_not_an_object_is_refused():
    for rec in ([{"video_path": "v"}], "v.mp4", 3, None):
        with pytest.raises(AnnotationError) as e:
            to_stream(rec, 2)
        assert e.value.reason == "bad_record"


def test_later_responses_overwrite_earlier_states():
    rs = [{"content": "first", "st_time": 2, "end_time": 4}, {"content": "second", "time": "3"},
          {"content": "third", "st_time": 4, "end_time": 5}]
    st, _ = states(8, [], rs)
    # first: B at 1,2,3, R at 4; second: R at 2; third: B at 3,4 (overwrites R first), R at 5
    assert st == [S, B, f"{RESPONSE} second", B, B, f"{RESPONSE} third", S, S]


def test_response_past_the_last_turn_is_dropped_but_standby_kept():
    st, _ = states(4, [], [{"content": "x", "st_time": 3, "end_time": 4}])
    assert st == [S, S, B, B]


@pytest.mark.parametrize("value,fps,expected", [
    ("5", 1.0, 5), (7, 1.0, 7), (7.9, 1.0, 7), ("2.5", 2.0, 5), ("01:05", 1.0, 65), ("1:02:03", 1.0, 3723),
    ("00:00:10", 2.0, 20), ("", 1.0, None), (None, 1.0, None),
])
def test_time_parsing(value, fps, expected):
    assert parse_time(value, fps) == expected


@pytest.mark.parametrize("value,reason", [
    ("-3", "negative_time"), (-1, "negative_time"), (float("nan"), "nan_time"), ("nan", "nan_time"),
    ("abc", "bad_time"), ("1:xx", "bad_time"), (True, "bad_time"), ([1], "bad_time"),
])
def test_bad_times_raise_with_reason(value, reason):
    with pytest.raises(AnnotationError) as e:
        parse_time(value)
    assert e.value.reason == reason


def test_times_past_the_video_are_errors_when_refused():
    with pytest.raises(AnnotationError) as e:
        build_frame_states(5, [{"content": "q", "time": "9"}], [], past_end="refuse")
    assert e.value.reason == "time_out_of_range"
    for r in ({"content": "r", "st_time": 2, "end_time": 7}, {"content": "r", "time": 6}):
        with pytest.raises(AnnotationError) as e:
            build_frame_states(5, [], [r], past_end="refuse")
        assert e.value.reason == "time_out_of_range" and "past the end" in str(e.value)


def test_num_frames_is_total_frames_div_interval():
    assert stream_num_frames(50, 4.0, 1.0) == 12
    assert stream_num_frames(59, 29.97, 1.0) == 2
    assert math.isclose(stream_num_frames(30, 30.0, 2.0), 2)


def test_frame_indices_are_every_interval_th_frame_the_last_repeated():
    assert stream_frame_indices(3, 50, 4.0, 1.0).tolist() == [0, 4, 8]
    assert stream_frame_indices(5, 10, 4.0, 1.0).tolist() == [0, 4, 8, 9, 9]  # past the end: the last frame
    assert stream_frame_indices(3, 59, 29.97, 1.0).tolist() == [0, 29, 58]  # int(29.97) = 29 frames per turn


def test_a_response_past_the_end_drops_only_that_answer_and_is_reported():
    """Reference `build_frame_states`: a `time` response whose frame is past the last is skipped; a span keeps its
    </Standby> turns up to the last frame and loses its answer; the other answers stay."""
    rs = [{"content": "early", "time": "2"}, {"content": "late", "time": "9"},
          {"content": "cut", "st_time": 4, "end_time": 8}]
    dropped = []
    st, _ = build_frame_states(5, [], rs, dropped=dropped)
    assert st == [S, f"{RESPONSE} early", S, B, B]  # the span's standby inside the video is kept
    assert [d.reason for d in dropped] == ["response_past_end", "response_past_end"]
    assert "response.time=9" in str(dropped[0]) and "response.end_time=8" in str(dropped[1])


def test_a_span_starting_past_the_end_leaves_no_trace():
    """Reference `build_frame_states`: the standby range starts past the video, so it is empty."""
    dropped = []
    st, _ = build_frame_states(4, [], [{"content": "x", "st_time": 6, "end_time": 7}], dropped=dropped)
    assert st == [S] * 4 and [d.reason for d in dropped] == ["response_past_end"]
    assert "response.st_time=6" in str(dropped[0])


def test_a_question_past_the_end_is_dropped_and_the_record_kept():
    """Reference `build_frame_states`: a question whose frame is past the last is not put in the question map."""
    dropped = []
    rec = {"video_path": "v.mp4", "question": [{"content": "A", "time": "2"}, {"content": "B", "time": "9"}],
           "response": [{"content": "yes", "time": "3"}]}
    out = to_stream(rec, 4, dropped=dropped)
    users = [m["content"] for m in out["messages"] if m["role"] == "user"]
    assert users == ["A\n<0s-1s>\n<stream>", "A\n<1s-2s>\n<stream>", "<2s-3s>\n<stream>", "<3s-4s>\n<stream>"]
    assert [d.reason for d in dropped] == ["question_past_end"]


def test_a_first_question_past_the_end_still_opens_the_stream():
    """Reference `convert_format_to_stream`: with no question at frame 0, the first question's text goes there,
    even when its own time was past the video."""
    out = to_stream({"video_path": "v", "question": [{"content": "Q", "time": "9"}], "response": []}, 3)
    assert out["messages"][1]["content"] == "Q\n<0s-1s>\n<stream>"


def test_an_answer_on_the_turn_after_the_last_is_dropped_and_reported_in_both_modes():
    """Reference `build_frame_states`: the answer goes on the turn after end_time, skipped when that is past the
    video; the annotation itself is inside the video, so the refuse mode does not refuse it."""
    for mode in ("drop", "refuse"):
        dropped = []
        st, _ = build_frame_states(4, [], [{"content": "x", "st_time": 3, "end_time": 4}], past_end=mode,
                                   dropped=dropped)
        assert st == [S, S, B, B] and [d.reason for d in dropped] == ["response_past_end"]


def test_past_end_mode_is_checked():
    with pytest.raises(ValueError, match="past_end"):
        build_frame_states(4, [], [], past_end="clip")


def test_videos_as_a_string_is_one_path():
    """The reference reads `videos[0] if isinstance(videos, list) else videos` (maifoundations/Streamo
    scripts/convert_streaming_video.py, convert_format_to_stream)."""
    rec = {"question": [{"content": "Q", "time": "1"}], "response": []}
    assert record_video_path({**rec, "videos": "clips/a.mp4"}) == "clips/a.mp4"
    assert record_video_path({**rec, "videos": ["b.mp4", "c.mp4"]}) == "b.mp4"
    assert to_stream({**rec, "videos": "clips/a.mp4"}, 1)["videos"] == ["clips/a.mp4"]
    for bad, reason in (({}, "missing_field"), ({"videos": []}, "missing_field"), ({"videos": [3]}, "bad_field")):
        with pytest.raises(AnnotationError) as e:
            record_video_path({**rec, **bad})
        assert e.value.reason == reason


# Streamo's system prompt as it appears, JSON-escaped, in every record of maifoundations/Streamo
# dataset/example/stream_format.json (the converter's DEFAULT_SYSTEM_PROMPT; inference.py's SYSTEM is the same).
UPSTREAM_PROMPT_JSON = (
    r'"\nYou are a helpful assistant specializing in streaming video analysis. \nYou will receive input frame by '
    r'frame, each labeled with absolute time intervals \nin the exact format <Xs-Ys> (e.g., <0s-1s>). Follow these '
    r'rules precisely:\n\n1. Use </Silence> when:\n   - No relevant event has started, OR\n   - The current input is '
    r'irrelevant to the given question.  \n\n2. Use </Standby> when:\n   - An event is in progress but has not yet '
    r'completed, OR\n   - The current input is relevant but the question cannot yet be answered.  \n\n3. Use '
    r'</Response> only when:\n   - An event has fully concluded, OR\n   - The available information is sufficient '
    r'to fully answer the question.\n   Provide a complete description at this point.  \n\nDo not provide partial '
    r'answers or speculate beyond the given information.  \nWhenever you deliver an answer, begin with '
    r'</Response>.\n"'
)


def test_the_default_system_prompt_is_streamos_own_verbatim():
    """Reference `convert_format_to_stream`: `system_prompt or DEFAULT_SYSTEM_PROMPT`."""
    rec = {"video_path": "v", "question": [{"content": "Q", "time": "1"}], "response": []}
    assert to_stream(rec, 1)["messages"][0] == {"role": "system", "content": json.loads(UPSTREAM_PROMPT_JSON)}
    assert to_stream(rec, 1, system_prompt="Be brief.")["messages"][0]["content"] == "Be brief."


def test_the_streaming_runtime_defaults_to_the_same_prompt():
    """maifoundations/Streamo inference.py sends the same prompt; our runtime must match the converted data."""
    from stvl_jax.infer.streamo import StreamoRunner

    default = inspect.signature(StreamoRunner).parameters["system_prompt"].default
    assert default == json.loads(UPSTREAM_PROMPT_JSON)
