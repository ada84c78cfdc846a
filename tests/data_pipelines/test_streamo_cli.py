"""`stvl data streamo` on raw records the way Streamo's own converter reads them (maifoundations/Streamo
scripts/convert_streaming_video.py, `to-stream`), over real tiny videos written here."""

import fractions
import json

import pytest

from data_pipelines.formats.streamo import RESPONSE, SILENCE, STANDBY, STREAMO_SYSTEM_PROMPT
from stvl_jax.cli import main
from video_files import write_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two clips beside the raw file: 6 s at 4 fps (.mp4, 6 turns) and 3.5 s at 60 fps (.mkv, 3 turns)."""
    d = tmp_path_factory.mktemp("streamo_cli")
    write_video(str(d / "a.mp4"), "mpeg4", fractions.Fraction(4), 24)
    write_video(str(d / "b.mkv"), "mpeg4", fractions.Fraction(60), 210)
    return d


def convert(d, raw, *flags, name="raw.json"):
    p = d / name
    p.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    out = d / "out.jsonl"
    rc = main(["data", "streamo", "--input", str(p), "--out", str(out), *flags])
    return rc, [json.loads(x) for x in open(out)] if rc == 0 else None


def assistants(row):
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"]


REC = {"video_path": "a.mp4", "question": [{"content": "Q?", "time": "1"}],
       "response": [{"content": "now", "time": "3"}]}


def test_a_record_with_a_response_past_the_end_is_kept_and_the_drop_counted(clips, capsys):
    """The reference keeps a record's valid answers and skips only the one whose turn is past the video."""
    rec = {**REC, "response": [{"content": "now", "time": "3"}, {"content": "late", "time": "9"}]}
    rc, rows = convert(clips, [rec])
    err = capsys.readouterr().err
    assert rc == 0 and len(rows) == 1 and "wrote 1, skipped 0" in err
    assert assistants(rows[0]) == [SILENCE, SILENCE, f"{RESPONSE} now", SILENCE, SILENCE, SILENCE]
    assert "response_past_end: 1" in err and "response.time=9" in err
    rc, rows = convert(clips, [rec], "--refuse-past-end")
    err = capsys.readouterr().err
    assert rc == 2 and "skipped 1" in err and "time_out_of_range: 1" in err  # nothing usable: an error


def test_a_span_running_past_the_end_keeps_its_standby_turns(clips, capsys):
    rec = {"video_path": "a.mp4", "question": [{"content": "Q?", "time": "0"}],
           "response": [{"content": "cut", "st_time": 5, "end_time": 9}]}
    rc, rows = convert(clips, [rec])
    assert rc == 0 and assistants(rows[0]) == [SILENCE] * 4 + [STANDBY, STANDBY]
    assert "response_past_end: 1" in capsys.readouterr().err


def test_an_mkv_converts(clips, capsys):
    """Matroska stores no frame count; the reference counts round(duration * fps) frames (OpenCV's count)."""
    rec = {"video_path": "b.mkv", "question": [{"content": "Q?", "time": "0"}],
           "response": [{"content": "done", "st_time": 1, "end_time": 1}]}
    rc, rows = convert(clips, [rec])
    assert rc == 0 and assistants(rows[0]) == [STANDBY, f"{RESPONSE} done", SILENCE]  # 210 // 60 = 3 turns


@pytest.mark.parametrize("text", [
    json.dumps(REC, indent=2),  # one object (the reference's loader wraps it in a list)
    "\n  " + json.dumps([REC, REC], indent=2),  # a list after whitespace
    json.dumps(REC) + "\n" + json.dumps(REC) + "\n",  # JSON Lines under a .json name, as before
], ids=["object", "indented-list", "jsonl-named-json"])
def test_json_inputs_are_read_as_json(clips, capsys, text):
    rc, rows = convert(clips, text)
    assert rc == 0 and rows and all(assistants(r)[2] == f"{RESPONSE} now" for r in rows)
    assert "skipped 0" in capsys.readouterr().err


def test_a_json_input_that_is_not_records_is_one_error_line(clips, capsys):
    assert convert(clips, "[1, 2")[0] == 2
    assert "malformed JSON" in capsys.readouterr().err.strip().splitlines()[-1]
    assert convert(clips, "42")[0] == 2
    assert "list of records or one record object" in capsys.readouterr().err.strip().splitlines()[-1]


def test_videos_given_as_a_string(clips, capsys):
    """The reference reads `videos[0] if isinstance(videos, list) else videos`."""
    rec = {"videos": "a.mp4", "question": [{"content": "Q?", "time": "1"}], "response": []}
    rc, rows = convert(clips, json.dumps(rec) + "\n[1]\n", name="raw.jsonl")
    assert rc == 0 and len(rows) == 1 and rows[0]["videos"] == ["a.mp4"] and len(assistants(rows[0])) == 6
    assert "bad_record: 1" in capsys.readouterr().err  # a line that is not an object: counted, not a traceback


def test_the_system_prompt_is_streamos_unless_given(clips, capsys):
    rc, rows = convert(clips, [REC])
    assert rows[0]["messages"][0] == {"role": "system", "content": STREAMO_SYSTEM_PROMPT}
    rc, rows = convert(clips, [REC], "--system-prompt", "Be brief.")
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}


# One record per way the converter used to invent a target (issue 30, item 5), and a JSON list as a record.
INVENTING = [
    ("missing_response", {"video_path": "a.mp4", "question": [{"content": "Q?", "time": "1"}]}),
    ("missing_time", {**REC, "response": [{"content": "now", "time": None}]}),
    ("missing_time", {**REC, "response": [{"content": "now", "st_time": None, "end_time": None, "time": ""}]}),
    ("missing_question", {"video_path": "a.mp4", "response": [{"content": "The red circle enters.", "time": "3"}]}),
    ("missing_content", {**REC, "response": [{"content": "", "st_time": 2, "end_time": 3}]}),
    ("bad_record", [REC]),
]


def test_records_that_would_need_a_made_up_target_are_counted_skips(clips, capsys):
    rc, rows = convert(clips, [REC] + [rec for _, rec in INVENTING])
    err = capsys.readouterr().err
    assert rc == 0 and len(rows) == 1 and assistants(rows[0])[2] == f"{RESPONSE} now"
    assert "wrote 1, skipped 6" in err
    for reason, n in (("missing_response", 1), ("missing_time", 2), ("missing_question", 1), ("missing_content", 1),
                      ("bad_record", 1)):
        assert f"  {reason}: {n}  (first: " in err
    assert "raw.json[1]: record has no 'response'" in err and "raw.json[6]: record must be a JSON object" in err


@pytest.mark.parametrize("reason,rec", INVENTING, ids=[f"{r}-{i}" for i, (r, _) in enumerate(INVENTING)])
def test_strict_stops_at_the_first_with_one_line_naming_the_line(clips, capsys, reason, rec):
    text = json.dumps(REC) + "\n" + json.dumps(rec) + "\n"
    rc, _ = convert(clips, text, "--strict", name="raw.jsonl")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("stvl data: error: ") and "raw.jsonl:2: " in last
    assert last.endswith(f"[{reason}]") and "Traceback" not in last


def test_the_reference_default_question_is_opt_in(clips, capsys):
    rec = {"video_path": "a.mp4", "response": [{"content": "A man walks in.", "time": "2"}]}
    rc, rows = convert(clips, [rec], "--default-question")
    assert rc == 0 and rows[0]["messages"][1]["content"].startswith("Find all significant events in the video")
    rc, rows = convert(clips, [rec], "--default-question", "Describe every event.")
    assert rc == 0 and rows[0]["messages"][1]["content"] == "Describe every event.\n<0s-1s>\n<stream>"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        convert(clips, [rec], "--default-question", " ")
    assert "must not be empty" in capsys.readouterr().err
