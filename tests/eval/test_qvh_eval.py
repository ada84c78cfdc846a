"""QVHighlights Yes/No evaluation: prompts are well-formed left-padded batches and the accuracy bookkeeping
is right (a model forced to answer is scored against the gold answers)."""

import json
import os

import numpy as np
import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing
from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import TINY_TOKEN_IDS, build_tiny_tokenizer
from stvl_jax.eval.prompts import video_prompt_batch
from stvl_jax.eval.qvh_eval import evaluate_qvh_yesno
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from transformers import AutoTokenizer

    root = str(tmp_path_factory.mktemp("synth"))
    generate_dataset(root, SynthConfig(num_videos=10, seed=2), workers=1)
    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    path = os.path.join(root, "qvhighlights", "yesno_val.jsonl")
    with open(path) as f:
        samples = [json.loads(line) for line in f][:6]
    return tok, samples, os.path.dirname(path)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_prompt_batch_matches_the_model_contract(env, family):
    tok, samples, root = env
    vision = per_frame_preprocessing("qwen3_vl", max_pixels=64 * 64) if family == "qwen3_vl" else \
        per_frame_preprocessing("qwen2_5_vl", max_pixels=56 * 56)
    items = [(os.path.join(root, s["video"]), s["question"]) for s in samples[:3]]
    batch = video_prompt_batch(tok, vision, items, max_frames=4)
    assert batch["attention_mask"][:, -1].all()  # left padded: generation-ready
    video_tokens = int((batch["input_ids"] == TINY_TOKEN_IDS["<|video_pad|>"]).sum())
    assert video_tokens == int(batch["video_grid_thw"].prod(-1).sum()) // 4
    text = tok.decode(batch["input_ids"][0][batch["attention_mask"][0] == 1])
    assert text.endswith("<|im_start|>assistant\n") and samples[0]["question"] in text


def test_accuracy_bookkeeping_with_a_forced_answer(env, monkeypatch):
    tok, samples, root = env
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    yes = tok("Yes", add_special_tokens=False)["input_ids"]

    def always_yes(model, batch, **kw):  # the generation path is tested elsewhere; here: scoring
        return np.tile(np.asarray(yes + [TINY_TOKEN_IDS["<|im_end|>"]] * 3)[:3], (len(batch["input_ids"]), 1))

    monkeypatch.setattr("stvl_jax.models.qwen_vl.generate.generate", always_yes)
    out = evaluate_qvh_yesno(model, tok, per_frame_preprocessing("qwen2_5_vl", max_pixels=56 * 56), samples, root,
                             batch_size=4, max_frames=4, progress=False)
    m = out["metrics"]
    n_yes = sum(s["answer"] == "Yes" for s in samples)
    assert m["total"] == len(samples) and m["correct"] == n_yes
    assert m["yes_accuracy"] == 1.0 and m["no_accuracy"] == 0.0 and m["unparseable"] == 0


def test_real_generation_runs_on_a_batch(env):
    tok, samples, root = env
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    out = evaluate_qvh_yesno(model, tok, per_frame_preprocessing("qwen2_5_vl", max_pixels=56 * 56), samples[:3], root,
                             batch_size=4, max_frames=4, progress=False)
    assert set(out["outputs"]) == {s["id"] for s in samples[:3]}
    assert 0.0 <= out["metrics"]["accuracy"] <= 1.0
