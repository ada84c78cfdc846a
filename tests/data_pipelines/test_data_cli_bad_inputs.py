"""Bad-input corpus of `stvl data`: every subcommand that reads records, every way a record can be unusable.

Each bad record sits on line 2 of a file after one good record. Without --strict it is skipped and counted under
its reason (the good record is still written); with --strict the command stops with exit 2 and one line
`stvl data: error: FILE:2: ... [reason]`, never a traceback, and nothing is filled in with a default. A new
subcommand or a new way to fail gets a row here.
"""

import fractions
import json

import pytest

from stvl_jax.cli import main
from video_files import write_video

NAN = float("nan")
Q = [{"content": "When does it enter?", "time": "1"}]
STREAMO = {"video_path": "a.mp4", "question": Q, "response": [{"content": "It enters.", "st_time": 2, "end_time": 3}]}
STRIDE_PARTS = [{"type": "text", "content": "the red circle enters"},
                {"type": "video", "path": "a.mp4", "start_seconds": 0, "end_seconds": 5},
                {"type": "activation_output",
                 "entries": [{"start_seconds": 1, "end_seconds": 3, "value": "<active>", "mask": True}]}]
STRIDE = {"id": "s0", "data": STRIDE_PARTS}
QVH = {"qid": 7, "query": "the red circle is moving", "duration": 20.0, "vid": "v1",
       "relevant_windows": [[2.0, 6.0], [12.0, 14.0]]}
SAMPLE, PREDICTION = {"id": "7_yes", "answer": "Yes"}, {"id": "7_yes", "prediction": "Yes"}


def stride_with(part: int, **change):
    parts = [dict(p) for p in STRIDE_PARTS]
    parts[part].update(change)
    return {"id": "s1", "data": parts}


def entry_with(**change):
    return stride_with(2, entries=[{**STRIDE_PARTS[2]["entries"][0], **change}])


NOT_RECORDS = [("bad_json", "{\"video_path\": "), ("bad_json", "{'single': 'quotes'}"), ("bad_record", [STREAMO]),
               ("bad_record", 42), ("bad_record", "a.mp4"), ("bad_record", None)]

# command -> (good record, kept rows per good record, [(reason, bad record)])
CORPUS = {
    "streamo": (STREAMO, 1, NOT_RECORDS + [
        ("missing_field", {"question": Q, "response": []}),
        ("bad_field", {**STREAMO, "video_path": ["a.mp4", 3]}),
        ("missing_file", {**STREAMO, "video_path": "gone.mp4"}),
        ("missing_question", {"video_path": "a.mp4", "response": STREAMO["response"]}),
        ("missing_question", {**STREAMO, "question": []}),
        ("missing_response", {"video_path": "a.mp4", "question": Q}),
        ("missing_response", {**STREAMO, "response": None}),
        ("bad_field", {**STREAMO, "question": "When?"}),
        ("bad_field", {**STREAMO, "response": {"content": "x", "time": 2}}),
        ("bad_field", {**STREAMO, "question": ["When?"]}),
        ("bad_field", {**STREAMO, "response": [{"content": {"text": "x"}, "time": 2}]}),
        ("missing_content", {**STREAMO, "question": [{"time": "1"}]}),
        ("missing_content", {**STREAMO, "response": [{"content": "", "st_time": 2, "end_time": 3}]}),
        ("missing_time", {**STREAMO, "question": [{"content": "When?", "time": None}]}),
        ("missing_time", {**STREAMO, "response": [{"content": "x", "time": None}]}),
        ("missing_time", {**STREAMO, "response": [{"content": "x", "st_time": 2, "end_time": "", "time": ""}]}),
        ("bad_time", {**STREAMO, "response": [{"content": "x", "time": "soon"}]}),
        ("bad_time", {**STREAMO, "response": [{"content": "x", "time": True}]}),
        ("negative_time", {**STREAMO, "question": [{"content": "When?", "time": -2}]}),
        ("nan_time", {**STREAMO, "response": [{"content": "x", "time": NAN}]}),
        ("bad_span", {**STREAMO, "response": [{"content": "x", "st_time": 4, "end_time": 2}]}),
    ]),
    "stride": (STRIDE, 1, NOT_RECORDS[:2] + [
        ("bad_record", 42), ("bad_record", {"id": "s1", "data": None}), ("bad_record", {"id": "s1"}),
        ("missing_field", {"data": STRIDE_PARTS[1:]}),
        ("missing_field", {"data": STRIDE_PARTS[:2]}),
        ("missing_field", {"data": [STRIDE_PARTS[0], {"type": "video"}, STRIDE_PARTS[2]]}),
        ("bad_field", stride_with(1, path=["a.mp4"])),
        ("bad_field", stride_with(1, path=3)),
        ("missing_file", stride_with(1, path="gone.mp4")),
        ("bad_time", stride_with(1, start_seconds="start")),
        ("bad_time", stride_with(1, end_seconds=True)),
        ("nan_time", stride_with(1, start_seconds=NAN)),
        ("negative_time", stride_with(1, start_seconds=-1)),
        ("bad_span", stride_with(1, start_seconds=4, end_seconds=4)),
        ("time_out_of_range", stride_with(1, end_seconds=60)),
        ("missing_field", stride_with(2, entries=[])),
        ("missing_field", stride_with(2, entries=["<active>"])),
        ("missing_field", entry_with(start_seconds=False)),
        ("bad_field", entry_with(value=["<active>"])),
        ("bad_field", entry_with(value="<maybe>")),
        ("bad_field", entry_with(mask="yes")),
        ("nan_time", entry_with(end_seconds=NAN)),
        ("bad_span", entry_with(start_seconds=3, end_seconds=1)),
    ]),
    "qvh-yesno": (QVH, 2, NOT_RECORDS[:2] + [
        ("bad_record", [QVH]), ("bad_record", 7),
        ("missing_field", {k: v for k, v in QVH.items() if k != "qid"}),
        ("missing_field", {**QVH, "vid": None}),
        ("missing_field", {**QVH, "relevant_windows": []}),
        ("bad_field", {**QVH, "qid": [7]}),
        ("bad_field", {**QVH, "vid": ""}),
        ("bad_field", {**QVH, "query": " "}),
        ("bad_field", {**QVH, "video": ["a.mp4"]}),
        ("bad_field", {**QVH, "relevant_windows": [[1, 2, 3]]}),
        ("bad_time", {**QVH, "duration": "long"}),
        ("bad_time", {**QVH, "duration": True}),
        ("bad_time", {**QVH, "relevant_windows": [[False, 3]]}),
        ("nan_time", {**QVH, "relevant_windows": [[NAN, 3]]}),
        ("negative_time", {**QVH, "relevant_windows": [[-1, 3]]}),
        ("bad_span", {**QVH, "relevant_windows": [[5, 3]]}),
        ("time_out_of_range", {**QVH, "relevant_windows": [[5, 30]]}),
        ("no_no_time", {**QVH, "relevant_windows": [[0, 20]]}),
        ("no_yes_time", {**QVH, "relevant_windows": [[2.0, 2.5]]}),
    ]),
    "to-arrayrecord": (STREAMO, 1, NOT_RECORDS[:2] + [("bad_record", 42), ("bad_record", "a.mp4"),
                                                      ("bad_record", None)]),
    "qvh-yesno-score samples": (SAMPLE, None, NOT_RECORDS[:2] + [
        ("bad_record", [SAMPLE]), ("missing_field", {"answer": "Yes"}), ("missing_field", {"id": "7_no"}),
        ("bad_field", {"id": "7_no", "answer": "Maybe"}), ("bad_field", {"id": {"qid": 7}, "answer": "No"}),
        ("duplicate_id", {"id": "7_yes", "answer": "No"}),
    ]),
    "qvh-yesno-score predictions": (PREDICTION, None, NOT_RECORDS[:2] + [
        ("bad_record", "Yes"), ("missing_field", {"prediction": "Yes"}), ("missing_field", {"id": "7_yes"}),
        ("bad_field", {"id": "7_yes", "prediction": 1}), ("unknown_id", {"id": "8_no", "prediction": "No"}),
        ("duplicate_id", {"id": "7_yes", "prediction": "No"}),
    ]),
}
CASES = [(cmd, reason, bad) for cmd, (_, _, rows) in CORPUS.items() for reason, bad in rows]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    write_video(str(d / "a.mp4"), "mpeg4", fractions.Fraction(4), 24)  # 6 s
    return d


def write_lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) and r.startswith("{") else json.dumps(r)) + "\n"
                            for r in records))
    return str(path)


def run(folder, cmd, bad, *flags):
    """The command on [good, bad] -> (exit code, output path, input path)."""
    good = CORPUS[cmd][0]
    src = write_lines(folder / "in.jsonl", good, bad)
    if cmd.startswith("qvh-yesno-score"):
        other = write_lines(folder / "other.jsonl", PREDICTION if "samples" in cmd else SAMPLE)
        samples, preds = (src, other) if "samples" in cmd else (other, src)
        argv, out = ["qvh-yesno-score", "--samples", samples, "--predictions", preds], None
    else:
        out = str(folder / ("out.array_record" if cmd == "to-arrayrecord" else "out.jsonl"))
        argv = [cmd, "--input", src, "--out", out]
    return main(["data", *argv, *flags]), out, src


@pytest.mark.parametrize("cmd,reason,bad", CASES, ids=[f"{c}-{r}-{i}" for i, (c, r, _) in enumerate(CASES)])
def test_a_bad_record_is_a_counted_skip(folder, capsys, cmd, reason, bad):
    rc, out, src = run(folder, cmd, bad)
    stdout, err = capsys.readouterr()
    assert rc == 0 and f"skipped 1\n  {reason}: 1  (first: {src}:2" in err
    kept = CORPUS[cmd][1]
    if cmd == "to-arrayrecord":
        assert json.loads(stdout)["records"] == kept
    elif kept is not None:
        assert sum(1 for _ in open(out)) == kept
    else:  # the score: the good sample scored, its right answer counted
        m = json.loads(stdout)
        assert (m["correct"], m["total"]) == (1, 1)
        assert m["skipped_samples" if "samples" in cmd else "skipped_predictions"] == {reason: 1}


@pytest.mark.parametrize("cmd,reason,bad", CASES, ids=[f"{c}-{r}-{i}" for i, (c, r, _) in enumerate(CASES)])
def test_strict_is_one_line_naming_the_record_and_the_reason(folder, capsys, cmd, reason, bad):
    rc, _, src = run(folder, cmd, bad, "--strict")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith(f"stvl data: error: {src}:2: ") and last.endswith(f"[{reason}]")
