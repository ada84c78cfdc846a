"""ET-Bench reader and `score`: hand-computed F1 at tIoU 0.1/0.3/0.5/0.7 for the grounding (tvg/epm),
localization (tal) and dense temporal (dvc/slc) rows, STRIDE's answer format, clear input errors, the CLI.
(Parsing rules: test_etbench_parse.py; the other tasks and ties: test_etbench_metrics.py; the official numbers:
test_etbench_official.py.)"""

import json

import pytest

from stvl_jax.errors import InputError
from stvl_jax.eval import etbench
from stvl_jax.eval.etbench_parse import parse_captioned_segments, parse_segments


def _f1s(m):
    return [m[f"F1@{t}"] for t in etbench.THRESHOLDS]


def test_grounding_is_the_hit_rate_of_the_first_segment():
    samples = [
        {"task": "tvg", "source": "s", "video": "a", "tgt": [0, 10], "a": "2.0 - 8.0 seconds, 40 - 50 seconds"},
        {"task": "tvg", "source": "s", "video": "b", "tgt": [0, 10], "a": "I do not know"},
    ]
    m = etbench.score(samples)["tvg"]["s"]
    # sample a: IoU 6/10 = 0.6 (hit at 0.1, 0.3, 0.5; miss at 0.7); sample b: unparseable = a miss everywhere
    assert _f1s(m) == [0.5, 0.5, 0.5, 0.0]
    assert m["F1"] == 0.375 and m["Failed"] == 1 and m["Total"] == 2 and m["mIoU"] == 0.3


def test_localization_f1_matches_targets_and_predictions():
    s = {"task": "tal", "source": "s", "video": "a", "tgt": [[0, 10], [20, 30]], "a": "0 - 10 seconds, 50 - 60 seconds"}
    m = etbench.score([s])["tal"]["s"]
    # one of two targets matched (recall 1/2), one of two predictions matched (precision 1/2) -> F1 1/2
    assert _f1s(m) == [0.5, 0.5, 0.5, 0.5]


def test_dense_temporal_f1_scales_by_the_parsed_fraction():
    good = {"task": "dvc", "source": "s", "video": "a", "tgt": [[0, 10], [20, 30]], "g": ["one", "two"],
            "a": etbench.format_answer([[0, 10], [20, 24]], "dvc")}
    m = etbench.score([good])["dvc"]["s"]
    # the second prediction has IoU 0.4 with the second target: all matched up to 0.3, half of each above
    assert _f1s(m) == [1.0, 1.0, 0.5, 0.5] and m["F1"] == pytest.approx(0.75)
    bad = {"task": "dvc", "source": "s", "video": "b", "tgt": [[0, 5]], "g": ["three"], "a": "nothing here"}
    m = etbench.score([good, bad])["dvc"]["s"]
    # recall and precision are scaled by 1/2 (one of two videos parsed) before the harmonic mean
    assert _f1s(m) == [0.5, 0.5, 0.25, 0.25] and m["Failed"] == 1
    assert m["METEOR"] is None  # no caption scorer given: not computed


def test_stride_answers_read_back_through_the_official_readers():
    assert etbench.format_answer([[1, 2.5]], "tvg") == "1.0 - 2.5 seconds"
    assert parse_segments(etbench.format_answer([[1, 2.5], [4, 3]], "tal")) == [[1.0, 2.5], [3.0, 4.0]]
    dense = etbench.format_answer([[1, 2.5], [4, 6]], "slc")
    assert parse_captioned_segments(dense) == ([[1.0, 2.5], [4.0, 6.0]], ["an event.", "an event."])


def test_reader_selects_tasks_and_names_bad_input(tmp_path):
    path = tmp_path / "anno.json"
    path.write_text(json.dumps([{"task": "tvg", "video": "v.mp4", "q": "q", "tgt": [1, 2]},
                                {"task": "vhd", "video": "w.mp4", "q": "q", "tgt": [[0, 1]]}]))
    rows = etbench.read_annotations(str(path))
    assert [r["task"] for r in rows] == ["tvg"] and rows[0]["tgt"] == [1, 2]  # as written
    with pytest.raises(InputError, match="not found"):
        etbench.read_annotations(str(tmp_path / "missing.json"))
    path.write_text(json.dumps([{"task": "tvg", "video": "v.mp4", "q": "q"}]))
    with pytest.raises(InputError, match=r"anno.json\[0\]: sample lacks"):
        etbench.read_annotations(str(path))
    path.write_text(json.dumps([{"task": "tvg", "video": "v.mp4", "q": "q", "tgt": [1, "x"]}]))
    with pytest.raises(InputError, match=r"anno.json\[0\]: 'tgt' must be"):
        etbench.read_annotations(str(path))
    with pytest.raises(InputError, match="unknown task 'xyz'"):
        etbench.score([{"task": "xyz", "tgt": [0, 1], "a": "0 - 1"}])
    with pytest.raises(InputError, match=r"sample 0 \(rvq/s\): 'o' must be a list of 4 or 5 options"):
        etbench.score([{"task": "rvq", "source": "s", "o": ["a", "b"], "p": 0, "a": "a"}])
    with pytest.raises(InputError, match=r"sample 0 \(dvc/\): 'g' must hold one caption string per 'tgt'"):
        etbench.score([{"task": "dvc", "video": "v", "tgt": [[0, 1]], "a": "0 - 1"}])


def test_etbench_score_cli(tmp_path, capsys):
    from stvl_jax.cli import main

    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([{"task": "tvg", "source": "s", "video": "a", "tgt": [0, 10], "a": "0 - 10"}]))
    assert main(["eval", "etbench-score", str(preds), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["tvg"]["s"]["F1"] == 1.0
    # the Grounding table row, then the Overall table with only TVG computed
    assert out.splitlines()[2].split() == ["tvg", "s", "1", "0", "1.0", "1.0", "1.0", "1.0", "1.0"]
    assert "TVG (F1)" in out and "100.0" in out and "n/c" in out
    assert main(["eval", "etbench-score", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert main(["eval", "etbench-score", str(preds), "--sentsim-model", str(tmp_path / "no_model")]) == 2
    assert "no_model' is not a directory" in capsys.readouterr().err
