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
    assert main(["data", "streamo", "--input", str(p), "--out", str(tmp_path / "o.jsonl"), "--refuse-past-end"]) == 0
    assert "skipped 3" in capsys.readouterr().err
    assert main(["data", "streamo", "--input", str(p), "--out", str(tmp_path / "o.jsonl"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar: one error line
    assert err.startswith("stvl data: error: cannot decode video") and "text.mp4" in err
    assert main(["data", "inspect", bad_videos["zero"]]) == 2
    assert "0 bytes" in capsys.readouterr().err
