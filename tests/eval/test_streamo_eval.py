"""Streamo evaluation end to end on two synthetic streams with a tiny random model: it runs, aligns every
second with the ground truth and reports a consistent metrics dict; the JSON/plots are written by the CLI."""

import json
import os

import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing
from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import build_tiny_tokenizer
from stvl_jax.eval.streamo_eval import evaluate_streamo, parse_stream_record
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    generate_dataset(root, SynthConfig(num_videos=10, seed=1), workers=1)
    return root


def test_parse_stream_record(data):
    with open(os.path.join(data, "streamo", "stream_val.jsonl")) as f:
        rec = json.loads(f.readline())
    r = parse_stream_record(rec)
    assert len(r["user_texts"]) == len(r["gold_states"]) > 5
    assert all(u.endswith(f"<{i}s-{i + 1}s>") and "<stream>" not in u for i, u in enumerate(r["user_texts"]))
    assert r["question"] and r["user_texts"][0].startswith(r["question"])
    assert set(r["gold_states"]) <= {"</Silence>", "</Standby>", "</Response>"}


def test_evaluate_streamo_runs_and_aligns(data, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path / "tok")))
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    path = os.path.join(data, "streamo", "stream_val.jsonl")
    with open(path) as f:
        records = [json.loads(line) for line in f][:2]
    out = evaluate_streamo(model, tok, per_frame_preprocessing("qwen2_5_vl"), records, os.path.dirname(path),
                           max_answer_tokens=2, progress=False)
    m = out["metrics"]
    n = sum(len(parse_stream_record(r)["gold_states"]) for r in records)
    assert m["n"] == n and sum(map(sum, m["confusion"])) == n
    assert 0.0 <= m["macro_f1"] <= 1.0 and m["baseline"]["prediction"] == "</Silence>"
    assert len(out["streams"]) == 2 and all(len(s["pred"]) == len(s["gold"]) for s in out["streams"])
    # per task type: the seconds of each record counted under its task_type, and the parts add up to the whole
    tasks = {}
    for r in records:
        tasks[r["task_type"]] = tasks.get(r["task_type"], 0) + len(parse_stream_record(r)["gold_states"])
    assert {t: v["n"] for t, v in m["per_task"].items()} == tasks


def test_zero_pixels_control_streams_black_frames_of_the_same_shape(data, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    import stvl_jax.eval.streamo_eval as streamo_eval

    seen, run = [], streamo_eval.StreamoRunner.run

    def spy(self, frames, *args, **kwargs):
        seen.append(frames.copy())
        return run(self, frames, *args, **kwargs)

    monkeypatch.setattr(streamo_eval.StreamoRunner, "run", spy)
    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path / "tok")))
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    path = os.path.join(data, "streamo", "stream_val.jsonl")
    with open(path) as f:
        records = [json.loads(f.readline())]
    for zero in (False, True):
        evaluate_streamo(model, tok, per_frame_preprocessing("qwen2_5_vl"), records, os.path.dirname(path),
                         max_answer_tokens=1, zero_pixels=zero, progress=False)
    real, black = seen
    assert real.shape == black.shape and real.any() and not black.any()


@pytest.mark.parametrize("task", ["streamo", "qvh-yesno"])
def test_eval_cli_writes_metrics_and_plots(data, tmp_path, task, capsys):
    from stvl_jax.cli import main
    from stvl_jax.models.qwen_vl.loading import save_model

    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    ckpt = str(save_model(model, None, tmp_path / "ckpt"))
    tok = build_tiny_tokenizer(str(tmp_path / "tok"))
    out = tmp_path / "out"
    # data-parallel: faster here than the default fsdp mesh, which gathers the parameters at every token
    assert main(["eval", task, "--ckpt", ckpt, "--data", data, "--tokenizer", tok, "--limit", "2",
                 "--out", str(out), "--mesh", "8,1,1"]) == 0
    if task == "streamo":
        m = json.loads((out / "streamo_metrics.json").read_text())["metrics"]
        assert m["n"] > 0 and m["per_task"] and (out / "streamo_timelines.png").is_file()
        assert "macro-F1 per task" in capsys.readouterr().out
        assert main(["eval", task, "--ckpt", ckpt, "--data", data, "--tokenizer", tok, "--limit", "1",
                     "--out", str(tmp_path / "zero"), "--zero-pixels", "--mesh", "8,1,1"]) == 0
        assert "with every pixel zeroed" in capsys.readouterr().out
        assert main(["eval", task, "--ckpt", ckpt, "--data", data, "--tokenizer", tok, "--out", str(out),
                     "--mesh", "3,1,1"]) == 2  # a shape this machine's 8 devices do not fill: one line
        assert "--mesh 3,1,1: mesh {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices but 8" in capsys.readouterr().err
    else:
        m = json.loads((out / "qvh_yesno_metrics.json").read_text())["metrics"]
        assert m["total"] == 2
    assert main(["eval", task, "--ckpt", ckpt, "--data", str(tmp_path / "nowhere"), "--tokenizer", tok,
                 "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
