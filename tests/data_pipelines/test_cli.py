"""`stvl data ...` subcommands end to end through the top-level dispatcher."""

import json
import os

from stvl_jax.cli import main


def test_synth_and_converters(tmp_path, capsys, synth_dir):
    out = str(tmp_path / "s")
    assert main(["data", "synth", "--out", out, "--videos", "3", "--seed", "1", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["splits"]["train"] == 3
    raw = os.path.join(synth_dir, "streamo", "raw_train.json")
    assert main(["data", "streamo", "--input", raw, "--out", str(tmp_path / "st.jsonl")]) == 0
    assert "wrote" in capsys.readouterr().err
    rows = [json.loads(x) for x in open(tmp_path / "st.jsonl")]
    assert rows and rows[0]["messages"][1]["content"].endswith("<0s-1s>\n<stream>")
    st = os.path.join(synth_dir, "stride", "train.jsonl")
    assert main(["data", "stride", "--input", st, "--out", str(tmp_path / "w.jsonl"), "--window", "8"]) == 0
    w = json.loads(open(tmp_path / "w.jsonl").readline())
    assert len(w["gt"]) == 8 and w["activation"].count("<") == 16
    q = os.path.join(synth_dir, "qvhighlights", "train.jsonl")
    assert main(["data", "qvh-yesno", "--input", q, "--out", str(tmp_path / "y.jsonl")]) == 0
    ys = [json.loads(x) for x in open(tmp_path / "y.jsonl")]
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": y["id"], "prediction": "Yes"}) + "\n" for y in ys))
    capsys.readouterr()
    assert main(["data", "qvh-yesno-score", "--samples", str(tmp_path / "y.jsonl"), "--predictions", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.5  # balanced: always-Yes scores exactly half


def test_bad_input_is_counted_and_strict_is_one_line(tmp_path, capsys, synth_dir, bad_videos):
    # to-stream only needs the frame count (the container header), so use a file whose header is bad
    raw = [{"video_path": bad_videos["text"], "question": [{"content": "q", "time": "1"}], "response": []},
           {"video_path": os.path.join(synth_dir, "videos", "synth_00001.mp4"),
            "question": [{"content": "q", "time": "-4"}], "response": []},
           {"video_path": os.path.join(synth_dir, "videos", "synth_00001.mp4"),
            "question": [{"content": "q", "time": "900"}], "response": []}]
    p = tmp_path / "raw.json"
    p.write_text(json.dumps(raw))
    assert main(["data", "streamo", "--input", str(p), "--out", str(tmp_path / "o.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "skipped 2" in err and "bad_video: 1" in err and "negative_time: 1" in err
    assert "question_past_end: 1" in err  # dropped from a kept record, as Streamo's converter does
    os.remove(tmp_path / "o.jsonl")
    # every record unusable: the counts, then one error line, exit 2, and no output file
    assert main(["data", "streamo", "--input", str(p), "--out", str(tmp_path / "o.jsonl"), "--refuse-past-end"]) == 2
    err = capsys.readouterr().err
    assert "skipped 3" in err and err.strip().splitlines()[-1].startswith("stvl data: error:")
    assert "no usable record" in err and not os.path.exists(tmp_path / "o.jsonl")
    assert main(["data", "streamo", "--input", str(p), "--out", str(tmp_path / "o.jsonl"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar: one error line
    assert err.startswith(f"stvl data: error: {p}[0]: cannot decode video") and "text.mp4" in err
    assert err.endswith("[bad_video]")
    assert main(["data", "inspect", bad_videos["zero"]]) == 2
    assert "0 bytes" in capsys.readouterr().err


def _lines(path, *items):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return str(path)


def test_qvh_score_counts_every_sample_and_prediction_it_cannot_use(tmp_path, capsys):
    samples = _lines(tmp_path / "s.jsonl", {"id": "a", "answer": "Yes"}, {"id": "b", "answer": "No"}, "not json {",
                     [1], {"id": "c"}, {"id": "a", "answer": "No"}, {"id": "d", "answer": "Yes"})
    preds = _lines(tmp_path / "p.jsonl", {"id": "a", "prediction": "Yes"}, {"id": "b"},
                   {"id": "zz", "prediction": "No"}, {"id": "a", "prediction": "No"}, "garbage", {"prediction": "No"})
    assert main(["data", "qvh-yesno-score", "--samples", samples, "--predictions", preds]) == 0
    out, err = capsys.readouterr()
    m = json.loads(out)
    # scored: a (right), b and d (no usable prediction: wrong, and counted as missing)
    assert (m["correct"], m["total"], m["missing_predictions"]) == (1, 3, 2) and abs(m["accuracy"] - 1 / 3) < 1e-12
    assert m["skipped_samples"] == {"bad_json": 1, "bad_record": 1, "missing_field": 1, "duplicate_id": 1}
    assert m["skipped_predictions"] == {"missing_field": 2, "unknown_id": 1, "duplicate_id": 1, "bad_json": 1}
    assert "read 3, skipped 4" in err and "read 1, skipped 5" in err
    assert "s.jsonl:5: sample lacks 'answer'" in err and "p.jsonl:2: prediction lacks 'prediction'" in err
    assert main(["data", "qvh-yesno-score", "--samples", samples, "--predictions", preds, "--strict"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"stvl data: error: {samples}:3: malformed JSON line [bad_json]"


def test_to_arrayrecord_writes_only_valid_records(tmp_path, capsys):
    from data_pipelines.grain.sources import ArrayRecordSource, parse_record

    good = [{"id": 1, "messages": [{"role": "user", "content": "héllo"}]}, [{"type": "text", "content": "q"}]]
    src = _lines(tmp_path / "x.jsonl", good[0], '{"id": 2, "messages": [', "42", good[1], "")
    out = str(tmp_path / "x.array_record")
    assert main(["data", "to-arrayrecord", "--input", src, "--out", out]) == 0
    stdout, err = capsys.readouterr()
    assert json.loads(stdout) == {"out": out, "records": 2, "skipped": {"bad_json": 1, "bad_record": 1}}
    assert "wrote 2, skipped 2" in err and f"{src}:2: malformed JSON line" in err and f"{src}:3: an index record" in err
    ar = ArrayRecordSource(out)
    assert [parse_record(ar[i]) for i in range(len(ar))] == good
    os.remove(out)
    assert main(["data", "to-arrayrecord", "--input", src, "--out", out, "--strict"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"stvl data: error: {src}:2: malformed JSON line [bad_json]"
    assert not os.path.exists(out)  # nothing written when stopped


def test_inspect_counts_records_no_format_accepts(tmp_path, capsys):
    src = _lines(tmp_path / "i.jsonl", {"id": 1}, [{"type": "text"}], "7", '"text"', "{bad")
    assert main(["data", "inspect", src]) == 0
    assert json.loads(capsys.readouterr().out) == {"records": 5, "malformed": {"bad_record": 2, "bad_json": 1}}


def test_synth_preset_vos_makes_entities_that_leave_and_return(tmp_path, capsys):
    from data_pipelines.vos import VosClipConfig, VosReader

    def returns(*preset):
        out = str(tmp_path / "_".join(("s",) + preset))
        assert main(["data", "synth", "--out", out, "--videos", "4", "--seed", "0", "--workers", "1", *preset]) == 0
        reader = VosReader(out, "train", VosClipConfig(num_frames=None, frame_stride=1))
        return [c for clip in reader.clips() for c in clip.case].count("exit_reentry")

    # the same videos, seed for seed; 4 returning entities instead of 1 (45 % vs 10 % over 64 videos)
    assert returns("--preset", "vos") >= returns() + 2
