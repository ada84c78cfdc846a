"""`stvl eval` on indexes of mixed good and bad records (a malformed JSON line, a record without a required
field, a truncated video, a 1-frame video): every subcommand skips and counts the bad ones with their reasons
(in the metrics JSON and on the console), scores the rest exactly as a run on the good records alone, applies
the training pipeline's validity rules, and fails with one line when nothing is usable."""

import fractions
import json
import os
import shutil

import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing
from data_pipelines.formats.streamo import STATE_TOKENS
from data_pipelines.grain.config import PipelineConfig
from data_pipelines.grain.examples import ExampleBuilder
from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import build_tiny_tokenizer
from stvl_jax.cli import main as stvl
from stvl_jax.infer.stride_runtime import StreamConfig
from stvl_jax.models.qwen_vl.loading import save_model
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.models.stride.config import StrideConfig
from video_files import write_video


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
    one_frame = write_video(str(root / "one_frame.mp4"), "mpeg4", fractions.Fraction(4), 1)
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
    assert all(e["message"].startswith(e["record"] + ": ") and e["message"].count(e["record"]) == 1
               for e in skipped["examples"])  # each names its record once


def _qwen_ckpt(root):
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    return str(save_model(model, None, root / "qwen_ckpt", overwrite=True,
                          preprocessing=per_frame_preprocessing("qwen2_5_vl", max_pixels=56 * 56)))


# ---- streamo ---------------------------------------------------------------------------------------------------


def _short(rec, turns):
    """The record's first `turns` seconds (a valid, cheaper stream)."""
    msgs = rec["messages"]
    return {**rec, "messages": msgs[:1] + msgs[1: 1 + 2 * turns]}


@pytest.mark.slow
def test_streamo_cli_skips_bad_records_and_scores_the_rest_as_alone(env, tmp_path, capsys):
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
    timing = "median_turn_latency_ms"  # wall-clock: the one field that is not a score
    assert {k: v for k, v in mixed_run["metrics"].items() if k != timing} == \
        {k: v for k, v in good_run["metrics"].items() if k != timing}
    strip = [{k: v for k, v in s.items() if k not in ("record", "latency_ms")} for s in mixed_run["streams"]]
    assert strip == [{k: v for k, v in s.items() if k not in ("record", "latency_ms")} for s in good_run["streams"]]
    assert [s["record"].rsplit(":", 1)[1] for s in mixed_run["streams"]] == ["1", "6"]
    _check_skipped(good_run["skipped"], {})
    _check_skipped(mixed_run["skipped"], {"bad_json": 1, "missing_field": 1, "bad_video": 1,
                                          "time_out_of_range": 1})
    assert [e["record"].rsplit(":", 1)[1] for e in mixed_run["skipped"]["examples"]] == ["2", "3", "4", "5"]
    assert "skipped 4 of 6 samples (bad_json 1, bad_video 1, missing_field 1, time_out_of_range 1)" in mixed_out


class FrameStates:
    """A stand-in for StreamoRunner whose state at each second is a function of that second's frame (so a record
    streamed with another record's frames, or a skipped record's frames, changes the score)."""

    def __init__(self, *args, **kwargs):
        pass

    def run(self, frames, user_texts, question=None):
        from stvl_jax.infer.streamo import StreamoTurn

        states = [STATE_TOKENS[int(f.mean()) % 3] for f in frames]
        return [StreamoTurn(i, u, s, s, 0.0) for i, (u, s) in enumerate(zip(user_texts, states))]


def test_streamo_skips_bad_records_and_scores_the_rest_as_alone(env, tmp_path, monkeypatch):
    """Function level, with the model replaced by a function of the frames (the CLI test above is slow)."""
    from stvl_jax.eval import streamo_eval
    from stvl_jax.eval.skips import SkipReport, read_jsonl

    monkeypatch.setattr(streamo_eval, "StreamoRunner", FrameStates)
    src = os.path.join(env["synth"], "streamo", "stream_train.jsonl")
    recs = [{**r, "videos": [_absolute(r["videos"][0], os.path.dirname(src))]} for r in _lines(src)]
    good = recs[:3]
    no_messages = {k: v for k, v in recs[3].items() if k != "messages"}
    unaligned = {**recs[4], "messages": recs[4]["messages"][:-1]}  # a user turn without its assistant turn
    mixed = [good[0], "{oops", no_messages, {**recs[5], "videos": [env["truncated"]]}, good[1],
             {**recs[6], "videos": [env["one_frame"]]}, unaligned, good[2]]
    runs = {}
    for name, rows in (("good", good), ("mixed", mixed)):
        _write_index(str(tmp_path / f"{name}.jsonl"), rows)
        skips = SkipReport(max_examples=3)
        pairs = read_jsonl(str(tmp_path / f"{name}.jsonl"), skips)
        runs[name] = (streamo_eval.evaluate_streamo(None, None, None, [r for _, r in pairs], str(tmp_path),
                                                    sources=[k for k, _ in pairs], skips=skips, progress=False),
                      skips)
    (good_run, _), (mixed_run, skips) = runs["good"], runs["mixed"]
    assert good_run["metrics"]["n"] > 30 and 0 < good_run["metrics"]["accuracy"] < 1
    assert mixed_run["metrics"] == good_run["metrics"]
    assert [{k: v for k, v in s.items() if k != "record"} for s in mixed_run["streams"]] == \
        [{k: v for k, v in s.items() if k != "record"} for s in good_run["streams"]]
    assert [s["record"].rsplit(":", 1)[1] for s in mixed_run["streams"]] == ["1", "5", "8"]
    assert mixed_run["skipped"]["by_reason"] == {"bad_json": 1, "missing_field": 1, "bad_video": 1,
                                                 "time_out_of_range": 1, "bad_field": 1}
    assert mixed_run["skipped"]["total"] == 5 and len(mixed_run["skipped"]["examples"]) == 3  # the first 3
    assert all(e["message"].startswith(e["record"] + ": ") for e in mixed_run["skipped"]["examples"])
    assert [e["record"].rsplit(":", 1)[1] for e in mixed_run["skipped"]["examples"]] == ["2", "3", "4"]
    assert "truncated.mp4" in mixed_run["skipped"]["examples"][2]["message"]
    assert skips.summary(3).startswith("skipped 5 of 8 samples (bad_field 1, bad_json 1, bad_video 1, ")


def test_qvh_yesno_skips_bad_samples_and_scores_the_rest_as_alone(env, tmp_path, monkeypatch):
    """Function level, generation replaced by a function of each prompt (the CLI test above is slow)."""
    import numpy as np
    from transformers import AutoTokenizer

    from data_pipelines.tokenizer import TINY_TOKEN_IDS
    from stvl_jax.eval.qvh_eval import evaluate_qvh_yesno
    from stvl_jax.eval.skips import SkipReport

    tok = AutoTokenizer.from_pretrained(env["tok"])
    answers = [tok(a, add_special_tokens=False)["input_ids"][:1] for a in ("Yes", "No")]
    eos = TINY_TOKEN_IDS["<|im_end|>"]
    batches = []

    def by_prompt(model, batch, **kw):  # "Yes" or "No" from the prompt's token sum: a misaligned batch shows
        batches.append(len(batch["input_ids"]))
        return np.asarray([answers[int(row[row != eos].sum()) % 2] + [eos] * 2 for row in batch["input_ids"]])

    monkeypatch.setattr("stvl_jax.models.qwen_vl.generate.generate", by_prompt)
    src = os.path.join(env["synth"], "qvhighlights", "yesno_train.jsonl")
    rows = [{**r, "video": _absolute(r["video"], os.path.dirname(src))} for r in _lines(src)[:7]]
    good = rows[:5] + [{**rows[5], "video": env["one_frame"]}]  # a 1-frame video is valid in training: scored
    mixed = [good[0], 17, {k: v for k, v in rows[6].items() if k != "answer"}, good[1], good[2],
             {**rows[6], "answer": "maybe"}, {**rows[6], "video": env["truncated"]}, good[3], good[4], good[5]]
    vision = per_frame_preprocessing("qwen2_5_vl", max_pixels=56 * 56)
    runs = {}
    for name, samples in (("good", good), ("mixed", mixed)):
        batches.clear()
        skips = SkipReport()
        runs[name] = evaluate_qvh_yesno(object(), tok, vision, samples, str(tmp_path), batch_size=4, max_frames=4,
                                        progress=False, skips=skips)
        runs[name]["batches"] = list(batches)
    assert runs["mixed"]["metrics"] == runs["good"]["metrics"] and runs["good"]["metrics"]["total"] == 6
    assert 0 < runs["good"]["metrics"]["correct"] < 6
    assert runs["mixed"]["outputs"] == runs["good"]["outputs"]
    assert runs["mixed"]["batches"] == runs["good"]["batches"] == [4, 4]  # the last batch padded with repeats
    assert runs["mixed"]["skipped"]["by_reason"] == {"bad_record": 1, "missing_field": 1, "bad_field": 1,
                                                     "bad_video": 1}
    assert [e["record"] for e in runs["mixed"]["skipped"]["examples"]] == [f"sample {i}" for i in (1, 2, 5, 6)]
    assert all(e["message"].startswith(e["record"] + ": ") for e in runs["mixed"]["skipped"]["examples"])


def test_etbench_score_names_a_malformed_prediction(tmp_path, capsys):
    (tmp_path / "pred.json").write_text(json.dumps([{"task": "tvg", "tgt": [0, 1], "a": "0 - 1"}, 3]))
    rc, out, err = _run(["eval", "etbench-score", str(tmp_path / "pred.json")], capsys)
    assert rc == 2 and err.strip().splitlines() == ["stvl eval: error: sample 1 is not an object with a 'task' "
                                                    "and a text answer 'a'"]


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


@pytest.mark.slow
def test_qvh_yesno_cli_skips_bad_samples_and_scores_the_rest_as_alone(env, tmp_path, capsys):
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


def _stride_lines(env):
    """(two good lines of distinct queries, those two among a bad JSON line, a line without "data", a truncated
    video and a 1-frame video)."""
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
    return good, [good[0], "{broken", no_data, bad("bad_trunc", env["truncated"]), bad("bad_one", env["one_frame"]),
                  good[1]]


ORACLE_WINDOW = StrideConfig(window=8, resolution=1.0, activation_token_id=10, active_token_id=11,
                             inactive_token_id=12)


def _oracle_eval(samples, skips):
    """`stride_eval.evaluate` with the oracle detector (ground truth as slot labels): the real loop, no model."""
    from stvl_jax.eval import stride_eval

    cfg = StreamConfig(chunk_size=2, max_window=8, stride=2)
    return stride_eval.evaluate(lambda s: stride_eval.OracleStream(s["tgt"], ORACLE_WINDOW, cfg), samples,
                                progress=False, skips=skips)


def test_stride_skips_bad_lines_and_scores_the_rest_as_alone(env, tmp_path):
    """Function level with the oracle detector (the CLI test below streams a tiny model: slow)."""
    from stvl_jax.eval import stride_eval
    from stvl_jax.eval.skips import SkipReport

    good, mixed = _stride_lines(env)
    runs = {}
    for name, rows in (("good", good), ("mixed", mixed)):
        _stride_data(env, tmp_path / name, rows)
        skips = SkipReport()
        runs[name] = _oracle_eval(stride_eval.synthetic_samples(str(tmp_path / name), "test", skips), skips)
    assert runs["mixed"]["metrics"] == runs["good"]["metrics"]
    assert runs["good"]["metrics"]["tvg"]["stvl-synth"]["Total"] == 2
    assert _without_records(runs["mixed"]) == _without_records(runs["good"])
    _check_skipped(runs["mixed"]["skipped"], {"bad_json": 1, "bad_record": 1, "bad_video": 1,
                                              "time_out_of_range": 1})


def test_etbench_skips_bad_samples_and_scores_the_rest_as_alone(env, tmp_path):
    from stvl_jax.eval import stride_eval
    from stvl_jax.eval.skips import SkipReport

    good, mixed = _etbench_samples(env)
    runs = {}
    for name, rows in (("good", good), ("mixed", mixed)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
        skips = SkipReport()
        samples = stride_eval.etbench_samples(str(tmp_path / f"{name}.json"), os.path.join(env["synth"], "videos"),
                                              ("tvg", "tal"), skips)
        runs[name] = _oracle_eval(samples, skips)
    assert runs["mixed"]["metrics"] == runs["good"]["metrics"] and len(runs["good"]["samples"]) == 2
    assert _without_records(runs["mixed"]) == _without_records(runs["good"])
    _check_skipped(runs["mixed"]["skipped"], {"missing_field": 1, "bad_field": 1, "bad_video": 1,
                                              "invalid_input": 1})


def _etbench_samples(env):
    good = [{"idx": 0, "task": "tvg", "source": "s", "video": "synth_00000.mp4", "duration": 14.0, "q": "q one",
             "tgt": [2.0, 5.0]},
            {"idx": 1, "task": "tal", "source": "s", "video": "synth_00001.mp4", "duration": 12.0, "q": "q two",
             "tgt": [[1.0, 3.0], [6.0, 8.0]]}]
    mixed = [good[0], {"task": "tvg", "video": "synth_00000.mp4", "tgt": [1, 2]},  # no "q"
             {"task": "tvg", "video": "synth_00000.mp4", "q": "q", "tgt": "soon"},
             {**good[0], "video": env["truncated"]}, {**good[0], "video": env["one_frame"]}, good[1]]
    return good, mixed


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


@pytest.mark.slow
def test_stride_cli_skips_bad_lines_and_scores_the_rest_as_alone(env, stride_ckpt, tmp_path, capsys):
    good, mixed = _stride_lines(env)
    _stride_data(env, tmp_path / "mixed", mixed)
    _stride_data(env, tmp_path / "good", good)
    runs = {name: _stride_eval(["eval", "stride", "--ckpt", stride_ckpt, "--data", str(tmp_path / name),
                                "--tokenizer", env["tok"]], capsys, tmp_path / f"out_{name}")
            for name in ("good", "mixed")}
    (good_run, _), (mixed_run, mixed_out) = runs["good"], runs["mixed"]
    assert mixed_run["metrics"] == good_run["metrics"] and mixed_run["baselines"] == good_run["baselines"]
    assert _without_records(mixed_run) == _without_records(good_run) and len(mixed_run["samples"]) == 2
    # no "data": training's bad_record; the 1-frame video cannot hold the line's clip: training's time_out_of_range
    _check_skipped(mixed_run["skipped"], {"bad_json": 1, "bad_record": 1, "bad_video": 1,
                                          "time_out_of_range": 1})
    assert "skipped 4 of 6 samples" in mixed_out


@pytest.mark.slow
def test_etbench_cli_skips_bad_samples_and_scores_the_rest_as_alone(env, stride_ckpt, tmp_path, capsys):
    videos = os.path.join(env["synth"], "videos")
    good, mixed = _etbench_samples(env)
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
