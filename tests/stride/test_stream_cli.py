"""`stvl stream` and `stvl eval stride` end to end on a synthetic video with a tiny random STRIDE checkpoint:
the timeline (stdout, stream.json), the activation-timeline PNG with the ground truth found for the query,
the downstream answerer called on each trigger, and the evaluation JSON with the baselines and the oracle."""

import json
import os

import pytest

from stvl_jax.cli import main as stvl
from stvl_jax.models.qwen_vl.loading import save_model

STREAM_FLAGS = ["--chunk", "2", "--max-window", "8", "--window", "8", "--max-pixels", "4096", "--steps", "2"]


@pytest.fixture(scope="module")
def ckpt(tiny_model, tmp_path_factory):
    return str(save_model(tiny_model, None, tmp_path_factory.mktemp("stride_ckpt") / "ckpt"))


def _first_sample(synth_dir):
    with open(os.path.join(synth_dir, "stride", "train.jsonl")) as f:
        rec = json.loads(f.readline())
    video = os.path.normpath(os.path.join(synth_dir, "stride", rec["data"][1]["path"]))
    return video, rec["data"][0]["content"]


def test_stream_prints_timeline_and_writes_png(ckpt, tok_dir, synth_dir, tmp_path, capsys):
    video, query = _first_sample(synth_dir)
    out = tmp_path / "stream"
    # --margin 0 --confidence 0: spans complete as soon as they end, so a random model triggers and the
    # answerer (the same tiny checkpoint: any Qwen-VL) is exercised
    assert stvl(["stream", video, "--query", query, "--ckpt", ckpt, "--tokenizer", tok_dir, "--answerer", ckpt,
                 "--answerer-tokenizer", tok_dir, "--answer-frames", "4", "--max-answer-tokens", "3",
                 "--margin", "0", "--confidence", "0", "--multi-event", "--out", str(out), *STREAM_FLAGS]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "stream.json").read_text())
    assert (out / "timeline.png").stat().st_size > 10_000
    assert record["ground_truth"], "the synthetic video's event span should be found for its own query"
    assert len(record["chunks"]) >= 3 and all(len(c["labels"]) == 8 for c in record["chunks"])
    lat = record["latency"]
    assert lat["all"]["n"] == len(record["chunks"]) == lat["prefix_built"]["n"] + lat["prefix_reused"]["n"]
    assert lat["prefix_built"]["n"] >= 1 and lat["prefix_reused"]["n"] >= 1
    assert "wrote" in text and "t=" in text
    assert len(record["answers"]) == sum(s["trigger_time"] is not None for s in record["segments"])


def test_stream_names_a_missing_video(ckpt, tok_dir, capsys):
    assert stvl(["stream", "no_such.mp4", "--query", "q", "--ckpt", ckpt, "--tokenizer", tok_dir]) == 2
    assert "no_such.mp4" in capsys.readouterr().err


def test_eval_stride_reports_metrics_and_baselines(ckpt, tok_dir, synth_dir, tmp_path):
    out = tmp_path / "eval"
    assert stvl(["eval", "stride", "--ckpt", ckpt, "--data", synth_dir, "--split", "train", "--limit", "2",
                 "--tokenizer", tok_dir, "--out", str(out), *STREAM_FLAGS]) == 0
    result = json.loads((out / "stride_metrics.json").read_text())
    assert len(result["samples"]) == 2
    assert set(result["baselines"]) == {"always_on", "always_off", "oracle"}
    m = result["metrics"]["tvg"]["stvl-synth"]
    assert {"F1@0.5", "F1"} <= set(m) and 0.0 <= m["F1@0.5"] <= 1.0
    assert (out / "stride_timelines.png").is_file()


def test_eval_stride_zero_pixels_streams_black_frames(ckpt, tok_dir, synth_dir, tmp_path, capsys, monkeypatch):
    from stvl_jax.infer.stride_runtime import StrideStream

    seen, run = [], StrideStream.run

    def spy(self, frames, *args, **kwargs):
        seen.append(frames.copy())
        return run(self, frames, *args, **kwargs)

    monkeypatch.setattr(StrideStream, "run", spy)
    first = []  # the model's stream in each run (the constant baselines stream after it)
    for flags in ([], ["--zero-pixels"]):
        seen.clear()
        assert stvl(["eval", "stride", "--ckpt", ckpt, "--data", synth_dir, "--split", "train", "--limit", "1",
                     "--tokenizer", tok_dir, "--out", str(tmp_path / "eval"), *STREAM_FLAGS, *flags]) == 0
        first.append(seen[0])
    real, black = first
    assert real.shape == black.shape and real.any() and not black.any()
    assert "(every pixel zeroed)" in capsys.readouterr().out
