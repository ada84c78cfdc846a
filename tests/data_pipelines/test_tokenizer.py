"""The tiny tokenizer: deterministic, fixed special ids, ChatML template equal to the pipeline's renderer."""

import hashlib
import os

from data_pipelines.grain.text import render_chat
from data_pipelines.tokenizer import SPECIAL_TOKENS, TINY_TOKEN_IDS, VOCAB_SIZE, build_tiny_tokenizer


def _digest(d):
    return hashlib.sha256(open(os.path.join(d, "tokenizer.json"), "rb").read()).hexdigest()


def test_deterministic_and_small(tiny_tokenizer, tmp_path):
    again = build_tiny_tokenizer(str(tmp_path / "again"))
    assert _digest(again) == _digest(tiny_tokenizer)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    assert len(tok) <= 512 and VOCAB_SIZE == 512
    for t, i in TINY_TOKEN_IDS.items():
        assert tok.convert_tokens_to_ids(t) == i
    assert TINY_TOKEN_IDS["<|video_pad|>"] == 6 and TINY_TOKEN_IDS["<activation>"] == 10
    assert tok.pad_token_id == TINY_TOKEN_IDS["<|endoftext|>"] and tok.eos_token_id == TINY_TOKEN_IDS["<|im_end|>"]
    # specials are single tokens; arbitrary text round-trips (byte-level)
    text = "".join(SPECIAL_TOKENS) + " Zebra ünïcödé 12.5 seconds"
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[: len(SPECIAL_TOKENS)] == list(range(len(SPECIAL_TOKENS)))
    assert tok.decode(ids) == text


def test_chat_template_equals_pipeline_renderer(tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "When does the red circle enter the scene?"},
            {"role": "assistant", "content": "</Response> The red circle enters the scene."},
            {"role": "user", "content": "<3s-4s>\n<|vision_start|><|image_pad|><|vision_end|>"},
            {"role": "assistant", "content": "</Silence>"}]
    text, spans = render_chat(msgs)
    assert tok.apply_chat_template(msgs, tokenize=False) == text
    assert [text[s:e] for s, e in spans] == ["</Response> The red circle enters the scene.<|im_end|>",
                                             "</Silence><|im_end|>"]
    parts = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}]
    assert tok.apply_chat_template(parts, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n")
