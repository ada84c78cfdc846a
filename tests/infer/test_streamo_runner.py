"""Streamo runner: turn format, KV-cache reuse between overflows, sliding window with the question re-inserted,
first-</Response> stop."""

import numpy as np
import pytest
from flax import nnx

from data_pipelines.grain.text import encode, image_placeholder, render_chat
from qwen_vl_helpers import per_frame_preprocessing
from data_pipelines.tokenizer import TINY_TOKEN_IDS, build_tiny_tokenizer
from stvl_jax.infer.streamo import StreamoRunner, parse_state, user_turn_texts
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    frames = np.random.default_rng(0).integers(0, 255, (7, 56, 56, 3), dtype=np.uint8)
    return tok, model, frames


def test_user_turns_follow_the_to_stream_rule():
    turns = user_turn_texts(4, [(3, "Where?")])
    assert turns == ["Where?\n<0s-1s>", "<1s-2s>", "Where?\n<2s-3s>", "<3s-4s>"]
    assert parse_state(" </Standby>") == "</Standby>" and parse_state("hello") is None


def test_sliding_window_reencodes_kept_rounds_with_the_question(setup):
    tok, model, frames = setup
    vision = per_frame_preprocessing("qwen2_5_vl")
    texts = user_turn_texts(7, [(1, "Tell me when it stops.")])
    runner = StreamoRunner(model, tok, vision, max_rounds=3, max_answer_tokens=3, system_prompt="SYS")
    turns = runner.run(frames, texts, question="Tell me when it stops.")
    assert [t.second for t in turns] == list(range(7))
    # after the last overflow the context is: system, rounds 4 and 5 (question re-inserted into round 4), round 6
    msgs = [{"role": "system", "content": "SYS"}]
    for k, t in enumerate(turns[4:6]):
        user = ("Tell me when it stops.\n" if k == 0 else "") + t.user
        msgs += [{"role": "user", "content": user + "\n" + image_placeholder()},
                 {"role": "assistant", "content": t.output}]
    msgs.append({"role": "user", "content": turns[6].user + "\n" + image_placeholder()})
    text, _ = render_chat(msgs, add_generation_prompt=True)
    ids, _ = encode(tok, text, [], {TINY_TOKEN_IDS["<|image_pad|>"]: [4, 4, 4]})
    generated = tok(turns[6].output, add_special_tokens=False)["input_ids"] + [TINY_TOKEN_IDS["<|im_end|>"]]
    assert runner.session.tokens == ids.tolist() + generated


def test_stop_on_first_response(setup, monkeypatch):
    tok, model, frames = setup
    runner = StreamoRunner(model, tok, per_frame_preprocessing("qwen2_5_vl"), stop_on_first_response=True)
    forced = iter([["</Silence>"], ["</Standby>"], ["</Response>", "Ġit"], ["</Silence>"]] * 3)

    def fake_generate(stop_ids, max_new_tokens):
        ids = tok.convert_tokens_to_ids(next(forced)) + [TINY_TOKEN_IDS["<|im_end|>"]]
        for i in ids:
            runner.session.append([i])
        return ids

    monkeypatch.setattr(runner.session, "generate", fake_generate)
    turns = runner.run(frames, user_turn_texts(7, [(1, "Q")]), question="Q")
    assert [t.state for t in turns] == ["</Silence>", "</Standby>", "</Response>"]
