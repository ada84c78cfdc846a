"""`stvl demo` (README command 1): the Streamo streams it writes are usable from any working directory, and the
whole demo runs end to end on a small setting (every stage, results JSON, plots), and one stage alone."""

import json
import os

import pytest

from data_pipelines.grain import make_pipeline
from data_pipelines.grain.config import PipelineConfig
from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import build_tiny_tokenizer
from stvl_jax.demo.streamo import write_streams


def test_streams_written_under_a_relative_directory_resolve_their_videos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate_dataset("runs/synth", SynthConfig(num_videos=6, seed=1), workers=1)
    tok = build_tiny_tokenizer("runs/tok")
    streams = write_streams("runs/synth", "runs/streamo", splits=("train",))
    with open(streams["train"]) as f:
        records = [json.loads(line) for line in f]
    assert records and all(os.path.isabs(r["videos"][0]) and os.path.isfile(r["videos"][0]) for r in records)
    pipe = make_pipeline(PipelineConfig(index=streams["train"], tokenizer=tok, format="streamo", batch_size=2,
                                        shuffle=False, shard="none", num_epochs=1))
    batch = next(pipe)
    assert batch["input_ids"].shape[0] == 2 and pipe.stats["skipped_total"] == 0


@pytest.mark.torch
def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    from stvl_jax.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "runs/demo", "--videos", "12", "--steps", "4", "--stride-steps", "4",
                 "--eval-limit", "2"]) == 0
    out = tmp_path / "runs" / "demo"
    results = json.loads((out / "demo_results.json").read_text())
    assert results["parity"]["max_abs_logit_diff"] < 1e-4 and results["parity"]["tokens_equal"]
    assert results["train"]["step"] == 4
    m = results["eval"]
    assert m["n"] > 0 and 0.0 <= m["macro_f1"] <= 1.0 and "baseline" in m
    control = results["eval_zero_pixels"]
    assert control["streams"] == 2 and 0 <= control["unchanged_streams"] <= 2 and 0.0 <= control["macro_f1"] <= 1.0
    assert (out / "eval" / "streamo_metrics_zero_pixels.json").is_file()
    for png in ("streamo_confusion.png", "streamo_timelines.png"):
        assert (out / "eval" / png).stat().st_size > 0
    stride = results["stride"]
    assert stride["train"]["step"] == 4 and stride["queries"] >= 1
    for run in (stride, stride["zero_pixels"], *stride["baselines"].values()):
        assert 0.0 <= run["f1@0.5"] <= 1.0
    assert stride["baselines"]["oracle"]["f1@0.5"] == 1.0  # the loop and the scoring allow a perfect score
    assert (out / "stream" / "timeline.png").stat().st_size > 0
    assert (out / "stride_eval" / "zero_pixels" / "stride_metrics.json").is_file()

    # one stage alone: its results replace the earlier ones, the others stay
    assert main(["demo", "stride", "--out", "runs/demo", "--videos", "12", "--stride-steps", "6",
                 "--eval-limit", "1"]) == 0
    again = json.loads((out / "demo_results.json").read_text())
    assert again["stride"]["train"]["step"] == 6 and again["eval"] == results["eval"]
