"""Training on the engine's output: the `strefer` pipeline format (text pairs only, `<k>` tokens as single ids,
the clip as a video part) read through TFDS + Grain, and the held-out evaluation's prompts and bookkeeping."""

import json
import os

import numpy as np
import pytest

from data_pipelines.errors import AnnotationError

VIDEO = {"type": "video", "path": "/videos/v.mp4", "start": 8.0, "end": 16.0}
PAIRS = [
    {"family": "region_action", "question": "What does <region> do in the video?", "answer": "It stops.",
     "regions": [1]},
    {"family": "temporal_grounding", "question": "When does the red circle move to the left?",
     "answer": "From <0> to <11>.", "regions": []},
    {"family": "counting", "question": "How many circles appear in the video?", "answer": "Two.", "regions": []},
    {"family": "appearance_reentry", "question": "Does <region> leave the frame and come back?", "answer": "No.",
     "regions": [1]},
    {"family": "appearance_reentry", "question": "When does the red circle first appear?", "answer": "At <4>.",
     "regions": []},
    {"family": "timestamp_yesno", "question": "At <20>, is the red circle standing still? Answer Yes or No.",
     "answer": "Yes", "regions": []},
]


def _example(pairs=PAIRS, **extra):
    record = {"messages": [{"role": "user", "content": [VIDEO, {"type": "text", "text": "q"}]},
                           {"role": "assistant", "content": "a"}], "clip_id": "v/s0c1"}
    return {"record": json.dumps(record), "instructions": json.dumps(pairs), **extra}


def test_training_record_keeps_the_text_pairs_with_the_clip():
    from data_pipelines.strefer.training import StreferTextConfig, training_record

    rec = training_record(_example(), StreferTextConfig(shuffle_turns=False), None, "ex0")
    msgs = rec["messages"]
    assert rec["clip_id"] == "v/s0c1" and len(msgs) == 8  # 4 of the 6 pairs: the two region pairs are left out
    assert msgs[0]["content"] == [{**VIDEO, "relative_times": True},  # frame stamps from the clip start
                                  {"type": "text", "text": "When does the red circle move to the left?"}]
    assert [m["content"] for m in msgs[1::2]] == ["From <0> to <11>.", "Two.", "At <4>.", "Yes"]
    assert [m["content"] for m in msgs[2::2]] == [PAIRS[2]["question"], PAIRS[4]["question"], PAIRS[5]["question"]]
    assert not any("<region>" in json.dumps(m) for m in msgs)


def test_turn_order_is_drawn_from_the_record_generator():
    from data_pipelines.strefer.training import StreferTextConfig, training_record

    cfg = StreferTextConfig()

    def answers(seed):
        msgs = training_record(_example(), cfg, np.random.default_rng(seed), "ex0")["messages"]
        assert msgs[0]["content"][0]["path"] == VIDEO["path"]
        assert all(isinstance(m["content"], str) for m in msgs[1:])
        return [m["content"] for m in msgs[1::2]]

    orders = {tuple(answers(s)) for s in range(20)}
    assert all(sorted(o) == sorted(["From <0> to <11>.", "Two.", "At <4>.", "Yes"]) for o in orders)
    assert len(orders) > 1 and answers(3) == answers(3)


def test_families_and_bad_examples():
    from data_pipelines.strefer.training import StreferTextConfig, training_record
    from stvl_jax.errors import ConfigError

    rec = training_record(_example(), StreferTextConfig(families=("counting",)), None, "ex0")
    assert [m["content"] for m in rec["messages"][1::2]] == ["Two."]
    with pytest.raises(ConfigError, match="'region_action' questions all refer to a region"):
        StreferTextConfig(families=("region_action",))
    with pytest.raises(ConfigError, match="unknown family 'colour'"):
        StreferTextConfig(families=("colour",))
    with pytest.raises(ConfigError, match="unknown strefer config keys"):
        StreferTextConfig.from_dict({"time_tokens": 32})
    bad_k = [{**PAIRS[1], "answer": "From <0> to <40>."}]
    with pytest.raises(AnnotationError, match=r"names <40> but strefer.num_time_tokens is 32 \[bad_field\]"):
        training_record(_example(bad_k), StreferTextConfig(), None, "ex0")
    with pytest.raises(AnnotationError, match=r"no pair .* without a region \[no_text_pairs\]"):
        training_record(_example(PAIRS[:1]), StreferTextConfig(), None, "ex0")
    with pytest.raises(AnnotationError, match=r"no 'instructions' feature \[missing_field\]"):
        training_record({"record": _example()["record"]}, StreferTextConfig(), None, "ex0")
    with pytest.raises(AnnotationError, match=r"'instructions' is not JSON \(.*\) \[bad_json\]"):
        training_record(_example(instructions="[{"), StreferTextConfig(), None, "ex0")


@pytest.fixture(scope="module")
def time_tokenizer(tmp_path_factory):
    from stvl_jax.data_cli import main

    out = str(tmp_path_factory.mktemp("tok_time"))
    assert main(["tokenizer", "--out", out, "--time-tokens", "32"]) == 0
    return out


def _data_dir(strefer_run) -> str:
    return os.path.dirname(os.path.dirname(strefer_run[0]["out"]))


def _text_pairs(example) -> list[dict]:
    """The pairs training should see, restated: those with no region."""
    return [p for p in example["instructions"] if not p["regions"]]


def test_pipeline_reads_clips_as_chats_of_their_text_pairs(strefer_run, time_tokenizer, tiny_tokenizer):
    import re

    from data_pipelines.grain import PipelineConfig, make_pipeline
    from data_pipelines.grain.sources import open_source
    from data_pipelines.tokenizer import open_tokenizer
    from stvl_jax.errors import InputError

    _, examples = strefer_run
    spec = f"tfds:strefer/train@{_data_dir(strefer_run)}"
    fields = {"index": spec, "tokenizer": time_tokenizer, "format": "strefer", "batch_size": 2, "shuffle": False,
              "length_buckets": [1024, 2048, 4096], "preprocess": {"frames": {"fps": 1.0, "max_frames": 4}},
              "shard": "none", "strict": True, "num_epochs": 1}
    tok = open_tokenizer(time_tokenizer)
    src = open_source(spec)  # unshuffled, unsharded: row r of the stream is record r
    by_id = {e["clip_id"]: e for e in examples}
    rows = 0
    with make_pipeline(PipelineConfig.from_dict(fields)) as it:
        for batch in it:
            assert "pixel_values_videos" in batch
            for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
                clip = by_id[json.loads(src[rows]["data"])["clip_id"]]
                pairs = _text_pairs(clip)
                text = tok.decode(ids[mask == 1])
                # Qwen3-VL's frame stamps count from the clip's start (a clip at 8-16 s is stamped 0-8 s)
                stamps = [float(s) for s in re.findall(r"<([\d.]+) seconds>", text)]
                assert stamps and max(stamps) < clip["end"] - clip["start"]
                assert text.count("<|im_start|>assistant\n") == len(pairs) and "<region>" not in text
                assert all(p["question"] in text and p["answer"] + "<|im_end|>" in text for p in pairs)
                # each <k> of an answer is one label of one token (the time tokens are ids 512..543)
                assert int((labels >= 512).sum()) == sum(len(re.findall(r"<\d+>", p["answer"])) for p in pairs)
                rows += 1
    assert rows == len(examples) // 2 * 2 and any(e["start"] > 0 for e in examples)  # clips that start later
    with pytest.raises(InputError, match="lacks Strefer's time tokens"):
        make_pipeline(PipelineConfig.from_dict({**fields, "tokenizer": tiny_tokenizer}))


def test_a_tokenizer_larger_than_the_model_is_refused(time_tokenizer):
    from stvl_jax.errors import ConfigError
    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.train.data import check_vocabulary

    with pytest.raises(ConfigError, match=r"has 544 tokens but the model has 512 embedding rows: set "
                                          r"model.vocab_size=544"):
        check_vocabulary(time_tokenizer, load_model_config("qwen3vl_tiny"))


@pytest.fixture(scope="module")
def eval_env(strefer_run, time_tokenizer):
    """(items of the first two clips, the tokenizer, a tiny vision config, the tiny model with 544 rows)."""
    from flax import nnx

    from qwen_vl_helpers import per_frame_preprocessing
    from data_pipelines.strefer.training import StreferTextConfig
    from data_pipelines.tokenizer import open_tokenizer
    from stvl_jax.eval.skips import SkipReport
    from stvl_jax.eval.strefer_eval import dataset_spec, read_items
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.train.init import with_vocab_size

    vision = per_frame_preprocessing("qwen3_vl", max_pixels=64 * 64, frames={"max_frames": 4})
    items = read_items(dataset_spec(_data_dir(strefer_run), "train"), StreferTextConfig(), SkipReport(), limit=2)
    model = QwenVLForConditionalGeneration(with_vocab_size(load_model_config("qwen3vl_tiny"), 544),
                                           preprocessing=vision, rngs=nnx.Rngs(0))
    return items, open_tokenizer(time_tokenizer), vision, model


def test_eval_reads_the_text_pairs_of_each_clip(strefer_run, eval_env):
    from data_pipelines.grain.sources import open_source

    items, *_ = eval_env
    _, examples = strefer_run
    src = open_source(f"tfds:strefer/train@{_data_dir(strefer_run)}")
    first_two = [json.loads(src[i]["data"])["clip_id"] for i in range(2)]
    expected = [p for cid in first_two for p in _text_pairs(next(e for e in examples if e["clip_id"] == cid))]
    assert [it["pair"] for it in items] == expected and {it["clip_id"] for it in items} == set(first_two)
    assert all(it["video"]["type"] == "video" and os.path.isabs(it["video"]["path"]) for it in items)


def test_eval_prompts_cut_before_the_answer_and_the_controls(eval_env, time_tokenizer):
    from stvl_jax.eval.strefer_eval import PromptBuilder, other_clip_parts

    items, tok, vision, model = eval_env
    it = items[0]
    build = {c: PromptBuilder(time_tokenizer, vision, model.config.positions, zero_pixels=c == "black")
             for c in ("model", "black")}
    ids, types, pv, grid, _ = build["model"](it["video"], it["pair"], "s")
    b_ids, _, b_pv, b_grid, _ = build["black"](it["video"], it["pair"], "s")
    t_ids, t_types, t_pv, t_grid, _ = build["model"](None, it["pair"], "s")
    tail = it["pair"]["question"] + "<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(ids).endswith(tail) and int((types == 2).sum()) == int(grid.prod()) // 4
    # the text-only control: exactly the chat of the question alone
    assert tok.decode(t_ids) == "<|im_start|>user\n" + tail and t_pv is None and t_grid is None
    assert not (t_types != 0).any()
    # the black-frame control: the same tokens, every pixel row that of a black frame (one colour)
    assert np.array_equal(ids, b_ids) and np.array_equal(grid, b_grid) and b_pv.shape == pv.shape
    assert (b_pv == b_pv[0]).all() and not (pv == pv[0]).all()
    # the other-clip control: the same tokens and grid (same length, relative stamps), another video's pixels
    other = other_clip_parts(items)[it["clip_id"]]
    o_ids, _, o_pv, o_grid, _ = build["model"](other, it["pair"], "s")
    length = it["video"]["end"] - it["video"]["start"]
    assert other["path"] != it["video"]["path"] and other["end"] - other["start"] == length
    assert np.array_equal(ids, o_ids) and np.array_equal(grid, o_grid)
    assert o_pv.shape == pv.shape and not np.array_equal(o_pv, pv)


def test_eval_scores_a_forced_answer_against_the_references(eval_env, time_tokenizer, monkeypatch):
    from stvl_jax.eval.strefer_eval import evaluate_strefer

    items, tok, vision, model = eval_env
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    two = tok("Two.", add_special_tokens=False)["input_ids"] + [im_end]
    seen = []

    def forced(model, batch, *, max_new_tokens, **kw):  # generation is tested elsewhere; here: the bookkeeping
        seen.append(batch)
        assert batch["attention_mask"][:, -1].all() and batch["input_ids"].shape[1] % 64 == 0
        return np.tile(np.asarray((two + [im_end] * max_new_tokens)[:max_new_tokens]), (len(batch["input_ids"]), 1))

    monkeypatch.setattr("stvl_jax.models.qwen_vl.generate.generate", forced)
    res = evaluate_strefer(model, tok, time_tokenizer, items, prior={"how_many_in_clip": "one"}, batch_size=4,
                           progress=False)
    assert res["conditions"] == ["model", "no_frames", "black_frames", "other_clip", "train_prior"]
    assert len(res["samples"]) == len(items) and all(s["model"] == "Two." for s in res["samples"])
    assert sum("pixel_values_videos" not in b for b in seen) == -(-len(items) // 4)  # the no-frames batches
    for fam in {it["pair"]["family"] for it in items}:
        golds = [it["pair"]["answer"] for it in items if it["pair"]["family"] == fam]
        row = res["families"][fam]
        assert row["n"] == len(golds)
        for cond in ("model", "no_frames", "black_frames", "other_clip"):
            assert row["accuracy"][cond] == pytest.approx(golds.count("Two.") / len(golds))
        ones = [it for it in items if it["pair"]["family"] == fam and it["pair"]["template"] == "how_many_in_clip"]
        assert row["accuracy"]["train_prior"] == pytest.approx(sum(it["pair"]["answer"] == "One." for it in ones)
                                                               / len(golds))
    assert res["families"]["all"]["n"] == len(items)


def _train_overrides(out_dir, index, tokenizer):
    return ["logging.progress=false", "logging.tensorboard=false", "logging.plot=false", f"out_dir={out_dir}",
            "steps=2", f"data.pipeline.index={index}", f"data.pipeline.tokenizer={tokenizer}",
            "data.pipeline.worker_count=0", "checkpoint.async_save=false"]


@pytest.mark.slow  # 6.5 min measured on 2 cores shared with a load of ~16: an engine run, train and generate compiles
def test_engine_to_training_to_held_out_eval(strefer_run, time_tokenizer, tmp_path, capsys):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine
    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from stvl_jax.cli import main

    held = tmp_path / "held"  # other videos, their own engine run
    generate_dataset(str(held), SynthConfig(num_videos=1, seed=4), workers=1)
    run_engine(str(held / "videos"), str(tmp_path / "held_out"), EngineConfig())
    train_dir = _data_dir(strefer_run)
    config = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "train", "strefer_tiny.yaml")
    rc = main(["train", config, *_train_overrides(tmp_path / "run", f"tfds:strefer/train@{train_dir}",
                                                  time_tokenizer)])
    assert rc == 0 and "done: step 2" in capsys.readouterr().out
    rc = main(["eval", "strefer", "--ckpt", str(tmp_path / "run" / "checkpoints" / "2"), "--data",
               str(tmp_path / "held_out"), "--tokenizer", time_tokenizer, "--prior", train_dir, "--limit", "1",
               "--out", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert rc == 0
    header = next(line for line in out.splitlines() if line.startswith("family"))
    assert header.split()[1:] == ["n", "model", "no", "frames", "black", "frames", "train", "prior"]
    with open(tmp_path / "eval" / "strefer_metrics.json") as f:
        res = json.load(f)
    from strefer_helpers import read_dataset

    held_out = read_dataset(str(tmp_path / "held_out"))
    first = res["samples"][0]["clip_id"]
    pairs = _text_pairs(next(e for e in held_out if e["clip_id"] == first))
    assert res["families"]["all"]["n"] == len(pairs) == len(res["samples"])
    for fam in {p["family"] for p in pairs}:
        assert res["families"][fam]["n"] == sum(p["family"] == fam for p in pairs)
        assert any(line.startswith(fam) for line in out.splitlines())
        assert all(0.0 <= v <= 1.0 for v in res["families"][fam]["accuracy"].values())
