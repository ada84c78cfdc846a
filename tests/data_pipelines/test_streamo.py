"""Streamo to-stream: one test per rule, expected states written by hand from the reference rules."""

import math

import pytest

from data_pipelines.errors import AnnotationError
from data_pipelines.formats.streamo import (
    RESPONSE, SILENCE, STANDBY, build_frame_states, parse_time, stream_frame_indices, stream_num_frames, to_stream,
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


def test_default_question_when_there_is_none():
    out = to_stream({"video_path": "v", "question": [], "response": []}, 2)
    assert out["messages"][1]["content"].startswith("Find all significant events")


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


def test_times_past_the_video_are_errors():
    with pytest.raises(AnnotationError) as e:
        states(5, [{"content": "q", "time": "9"}], [])
    assert e.value.reason == "time_out_of_range"
    with pytest.raises(AnnotationError):
        states(5, [], [{"content": "r", "st_time": 2, "end_time": 7}])


def test_num_frames_is_total_frames_div_interval():
    assert stream_num_frames(50, 4.0, 1.0) == 12
    assert stream_num_frames(59, 29.97, 1.0) == 2
    assert math.isclose(stream_num_frames(30, 30.0, 2.0), 2)


def test_frame_indices_are_every_interval_th_frame_the_last_repeated():
    assert stream_frame_indices(3, 50, 4.0, 1.0).tolist() == [0, 4, 8]
    assert stream_frame_indices(5, 10, 4.0, 1.0).tolist() == [0, 4, 8, 9, 9]  # past the end: the last frame
    assert stream_frame_indices(3, 59, 29.97, 1.0).tolist() == [0, 29, 58]  # int(29.97) = 29 frames per turn
