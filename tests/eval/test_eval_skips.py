"""`stvl eval` on indexes of mixed good and bad records (a malformed JSON line, a record without a required
field, a truncated video, a 1-frame video): every subcommand skips and counts the bad ones with their reasons
(in the metrics JSON and on the console), scores the rest exactly as a run on the good records alone, applies
the training pipeline's validity rules, and fails with one line when nothing is usable."""

import fractions
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing
from data_pipelines.grain.config import PipelineConfig
from data_pipelines.grain.examples import ExampleBuilder
from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import build_tiny_tokenizer
from stvl_jax.cli import main as stvl
from stvl_jax.models.qwen_vl.loading import save_model
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config

_spec = importlib.util.spec_from_file_location("video_files", Path(__file__).parents[1] / "data_pipelines" /
                                               "video_files.py")
video_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(video_files)

STRIDE_FLAGS = ["--chunk", "2", "--max-window", "8", "--window", "8", "--max-pixels", "4096", "--steps", "1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The synthetic set, the tiny tokenizer, and the bad videos: a truncated copy and a 1-frame clip."""
    root = tmp_path_factory.mktemp("skips")
    synth = str(root / "synth")
    generate_dataset(synth, SynthConfig(num_videos=4, seed=5), workers=1)
    good = os.path.join(synth, "videos", "synth_00000.mp4")
    data = open(good, "rb").read()
    truncated = str(root / "truncated.mp4")
    open(truncated, "wb").write(data[: len(data) // 2])
    one_frame = video_files.write_video(str(root / "one_frame.mp4"), "mpeg4", fractions.Fraction(4), 1)
    return {"synth": synth, "tok": build_tiny_tokenizer(str(root / "tok")), "truncated": truncated,
            "one_frame": one_frame, "root": root}


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_index(path, rows):
    """rows: JSON values, or str for a raw (malformed) line."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def _absolute(path, root):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(root, path))


def _run(argv, capsys):
    rc = stvl(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _check_skipped(skipped, by_reason):
    assert skipped["total"] == sum(by_reason.values())
    assert skipped["by_reason"] == by_reason
    assert len(skipped["examples"]) == skipped["total"]
    assert all({"record", "reason", "message"} <= set(e) for e in skipped["examples"])


def _qwen_ckpt(root):
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    return str(save_model(model, None, root / "qwen_ckpt", overwrite=True,
                          preprocessing=per_frame_preprocessing("qwen2_5_vl", max_pixels=56 * 56)))


# ---- streamo ---------------------------------------------------------------------------------------------------


def _short(rec, turns):
    """The record's first `turns` seconds (a valid, cheaper stream)."""
    msgs = rec["messages"]
    return {**rec, "messages": msgs[:1] + msgs[1: 1 + 2 * turns]}


def test_streamo_skips_bad_records_and_scores_the_rest_as_alone(env, tmp_path, capsys):
    src = os.path.join(env["synth"], "streamo", "stream_train.jsonl")
    recs = [{**r, "videos": [_absolute(r["videos"][0], os.path.dirname(src))]} for r in _lines(src)]
    good = [_short(recs[0], 3), _short(recs[1], 3)]
    one_frame = {**recs[2], "videos": [env["one_frame"]]}  # 13+ turns of a 0.25 s video
    assert sum(m["role"] == "user" for m in one_frame["messages"]) >= 10
    no_messages = {k: v for k, v in recs[3].items() if k != "messages"}
    mixed = [good[0], '{"messages": [', no_messages, {**good[1], "videos": [env["truncated"]]}, one_frame, good[1]]
    _write_index(str(tmp_path / "mixed" / "streamo" / "stream_val.jsonl"), mixed)
    _write_index(str(tmp_path / "good" / "streamo" / "stream_val.jsonl"), good)
    ckpt = _qwen_ckpt(tmp_path)
    results = {}
    for name in ("good", "mixed"):
        rc, out, err = _run(["eval", "streamo", "--ckpt", ckpt, "--data", str(tmp_path / name), "--tokenizer",
                             env["tok"], "--out", str(tmp_path / f"out_{name}")], capsys)
        assert rc == 0, err
        results[name] = (json.loads((tmp_path / f"out_{name}" / "streamo_metrics.json").read_text()), out)
    (good_run, _), (mixed_run, mixed_out) = results["good"], results["mixed"]
    assert mixed_run["metrics"] == good_run["metrics"]
    strip = [{k: v for k, v in s.items() if k not in ("record", "latency_ms")} for s in mixed_run["streams"]]
    assert strip == [{k: v for k, v in s.items() if k not in ("record", "latency_ms")} for s in good_run["streams"]]
    assert [s["record"].rsplit(":", 1)[1] for s in mixed_run["streams"]] == ["1", "6"]
    _check_skipped(good_run["skipped"], {})
    _check_skipped(mixed_run["skipped"], {"bad_json": 1, "missing_field": 1, "bad_video": 1,
                                          "time_out_of_range": 1})
    assert [e["record"].rsplit(":", 1)[1] for e in mixed_run["skipped"]["examples"]] == ["2", "3", "4", "5"]
    assert "skipped 4 of 6 samples (bad_json 1, bad_video 1, missing_field 1, time_out_of_range 1)" in mixed_out


def test_streamo_eval_refuses_what_training_refuses(env, tmp_path):
    """The 1-frame video: the training pipeline skips the record with the same reason the evaluation gives."""
    src = os.path.join(env["synth"], "streamo", "stream_train.jsonl")
    rec = {**_lines(src)[0], "videos": [env["one_frame"]]}
    _write_index(str(tmp_path / "one.jsonl"), [rec])
    builder = ExampleBuilder(PipelineConfig(index=str(tmp_path / "one.jsonl"), tokenizer=env["tok"],
                                            format="streamo", preprocess=per_frame_preprocessing("qwen2_5_vl")))
    from data_pipelines.grain.sources import JsonlSource
    import numpy as np

    ex = builder(JsonlSource(str(tmp_path / "one.jsonl"))[0], np.random.default_rng(0))
    assert ex["__skip__"] == "time_out_of_range"


def test_nothing_usable_is_one_clear_line(env, tmp_path, capsys):
    _write_index(str(tmp_path / "bad" / "streamo" / "stream_val.jsonl"), ['{"messages": [', '[1, 2'])
    rc, out, err = _run(["eval", "streamo", "--ckpt", str(tmp_path / "no_ckpt"), "--data", str(tmp_path / "bad"),
                         "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no usable sample" in err and "stream_val.jsonl" in err and "bad_json 2" in err


# ---- qvh-yesno -------------------------------------------------------------------------------------------------


def test_qvh_yesno_skips_bad_samples_and_scores_the_rest_as_alone(env, tmp_path, capsys):
    src = os.path.join(env["synth"], "qvhighlights", "yesno_train.jsonl")
    rows = [{**r, "video": _absolute(r["video"], os.path.dirname(src))} for r in _lines(src)[:4]]
    # a 1-frame video is a valid chat video in training (the frame repeats to a temporal patch): scored
    good = [rows[0], rows[1], rows[2], {**rows[3], "video": env["one_frame"]}]
    no_answer = {k: v for k, v in rows[3].items() if k != "answer"}
    mixed = [good[0], "not json", good[1], no_answer, {**rows[2], "video": env["truncated"]}, good[2], good[3]]
    _write_index(str(tmp_path / "mixed" / "qvhighlights" / "yesno_val.jsonl"), mixed)
    _write_index(str(tmp_path / "good" / "qvhighlights" / "yesno_val.jsonl"), good)
    ckpt = _qwen_ckpt(tmp_path)
    runs = {}
    for name in ("good", "mixed"):
        rc, out, err = _run(["eval", "qvh-yesno", "--ckpt", ckpt, "--data", str(tmp_path / name), "--tokenizer",
                             env["tok"], "--batch-size", "2", "--max-frames", "4", "--out",
                             str(tmp_path / f"out_{name}")], capsys)
        assert rc == 0, err
        runs[name] = (json.loads((tmp_path / f"out_{name}" / "qvh_yesno_metrics.json").read_text()), out)
    (good_run, _), (mixed_run, mixed_out) = runs["good"], runs["mixed"]
    assert mixed_run["metrics"] == good_run["metrics"] and mixed_run["metrics"]["total"] == 4
    assert mixed_run["outputs"] == good_run["outputs"]
    _check_skipped(mixed_run["skipped"], {"bad_json": 1, "missing_field": 1, "bad_video": 1})
    assert "skipped 3 of 7 samples" in mixed_out


# ---- stride / etbench ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stride_ckpt(tmp_path_factory):
    model = QwenVLForConditionalGeneration(load_model_config("stride_tiny"), rngs=nnx.Rngs(0))
    return str(save_model(model, None, tmp_path_factory.mktemp("stride_ckpt") / "ckpt"))


def _stride_data(env, dest, rows):
    _write_index(str(dest / "stride" / "test.jsonl"), rows)
    shutil.copytree(os.path.join(env["synth"], "annotations"), dest / "annotations", dirs_exist_ok=True)
    for vid in ("bad_trunc", "bad_one"):
        (dest / "annotations" / f"{vid}.json").write_text(json.dumps({"duration": 14.0}))


def _stride_eval(argv, capsys, out):
    rc, text, err = _run(argv + ["--out", str(out), *STRIDE_FLAGS], capsys)
    assert rc == 0, err
    name = "stride" if argv[1] == "stride" else "etbench"
    return json.loads((out / f"{name}_metrics.json").read_text()), text


def _without_records(result):
    return [{k: v for k, v in s.items() if k not in ("record", "wall_s", "idx", "timeline")}
            for s in result["samples"]]


def test_stride_skips_bad_lines_and_scores_the_rest_as_alone(env, stride_ckpt, tmp_path, capsys):
    src = os.path.join(env["synth"], "stride", "train.jsonl")
    lines = _lines(src)
    for r in lines:  # absolute video paths: the index moves
        r["data"][1]["path"] = _absolute(r["data"][1]["path"], os.path.dirname(src))
    firsts = list({(r["vid"], r["entity"], r["action"]): r for r in reversed(lines)}.values())[::-1]
    good = firsts[:2]

    def bad(vid, video):
        r = json.loads(json.dumps(firsts[2]))
        r["vid"], r["data"][1]["path"] = vid, video
        return r

    no_data = {k: v for k, v in firsts[3].items() if k != "data"}
    mixed = [good[0], "{broken", no_data, bad("bad_trunc", env["truncated"]), bad("bad_one", env["one_frame"]),
             good[1]]
    _stride_data(env, tmp_path / "mixed", mixed)
    _stride_data(env, tmp_path / "good", good)
    runs = {name: _stride_eval(["eval", "stride", "--ckpt", stride_ckpt, "--data", str(tmp_path / name),
                                "--tokenizer", env["tok"]], capsys, tmp_path / f"out_{name}")
            for name in ("good", "mixed")}
    (good_run, _), (mixed_run, mixed_out) = runs["good"], runs["mixed"]
    assert mixed_run["metrics"] == good_run["metrics"] and mixed_run["baselines"] == good_run["baselines"]
    assert _without_records(mixed_run) == _without_records(good_run) and len(mixed_run["samples"]) == 2
    # the 1-frame video cannot hold the line's clip: training's time_out_of_range
    _check_skipped(mixed_run["skipped"], {"bad_json": 1, "missing_field": 1, "bad_video": 1,
                                          "time_out_of_range": 1})
    assert "skipped 4 of 6 samples" in mixed_out


def test_etbench_skips_bad_samples_and_scores_the_rest_as_alone(env, stride_ckpt, tmp_path, capsys):
    videos = os.path.join(env["synth"], "videos")
    good = [{"idx": 0, "task": "tvg", "source": "s", "video": "synth_00000.mp4", "duration": 14.0, "q": "q one",
             "tgt": [2.0, 5.0]},
            {"idx": 1, "task": "tal", "source": "s", "video": "synth_00001.mp4", "duration": 12.0, "q": "q two",
             "tgt": [[1.0, 3.0], [6.0, 8.0]]}]
    mixed = [good[0], {"task": "tvg", "video": "synth_00000.mp4", "tgt": [1, 2]},  # no "q"
             {"task": "tvg", "video": "synth_00000.mp4", "q": "q", "tgt": "soon"},
             {**good[0], "video": env["truncated"]}, {**good[0], "video": env["one_frame"]}, good[1]]
    for name, rows in (("good", good), ("mixed", mixed)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    runs = {name: _stride_eval(["eval", "etbench", "--ckpt", stride_ckpt, "--anno", str(tmp_path / f"{name}.json"),
                                "--videos", videos, "--tokenizer", env["tok"]], capsys, tmp_path / f"out_{name}")
            for name in ("good", "mixed")}
    (good_run, _), (mixed_run, mixed_out) = runs["good"], runs["mixed"]
    assert mixed_run["metrics"] == good_run["metrics"] and mixed_run["baselines"] == good_run["baselines"]
    assert _without_records(mixed_run) == _without_records(good_run) and len(mixed_run["samples"]) == 2
    # the 1-frame video is shorter than the 2 frames a STRIDE stream needs
    _check_skipped(mixed_run["skipped"], {"missing_field": 1, "bad_field": 1, "bad_video": 1, "invalid_input": 1})
    assert "skipped 4 of 6 samples" in mixed_out
