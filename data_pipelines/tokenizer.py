"""A tiny, deterministic Qwen-style tokenizer for tiny models and tests (no hub access).

Byte-level BPE (any text encodes) trained on the synthetic set's template corpus
(`synthetic.vocabulary.corpus_lines`) to VOCAB_SIZE = 512 ids, with the Qwen-VL, Streamo and STRIDE special
tokens at fixed ids 0..12 (`TINY_TOKEN_IDS`) and a ChatML chat template. `<|endoftext|>` is the pad token,
`<|im_end|>` the end of a turn.

    path = build_tiny_tokenizer("out/tokenizer")          # writes a PreTrainedTokenizerFast directory
    tok = transformers.AutoTokenizer.from_pretrained(path)  # tok.convert_tokens_to_ids("<|video_pad|>") == 6

Chat template: `<|im_start|>{role}\n{content}<|im_end|>\n` per message (no default system prompt); list content
renders text parts verbatim, an image part as `<|vision_start|><|image_pad|><|vision_end|>` and a video part as
`<|vision_start|><|video_pad|><|vision_end|>` (the pipeline expands the pads to the grid's token count, and
for Qwen3-VL videos into per-frame-group blocks behind `<t seconds>` timestamps). `add_generation_prompt`
appends `<|im_start|>assistant\n`.
"""

from __future__ import annotations

import os

from stvl_jax.errors import InputError

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>", "</Silence>", "</Standby>", "</Response>", "<activation>", "<active>", "<inactive>",
)
TINY_TOKEN_IDS = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
VOCAB_SIZE = 512

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)


def open_tokenizer(path: str, what: str = "tokenizer"):
    """`AutoTokenizer.from_pretrained(path)` for a local directory only (never the hub): a missing directory or one
    transformers cannot read is one InputError naming `what` (e.g. the config key) and the path."""
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise InputError(f"{what}: tokenizer directory {path!r} not found")
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        raise InputError(f"{what}: {path!r} is not a tokenizer directory (no tokenizer.json or tokenizer_config.json)")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{what}: cannot load a tokenizer from {path!r}: {first}") from None


def build_tiny_tokenizer(out_dir: str) -> str:
    """Train (deterministically) and save the tiny tokenizer to out_dir; returns out_dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from data_pipelines.synthetic.vocabulary import corpus_lines

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    fast.chat_template = CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    for tok_str, i in TINY_TOKEN_IDS.items():
        got = fast.convert_tokens_to_ids(tok_str)
        if got != i:
            raise RuntimeError(f"tokenizer assigned {tok_str} id {got}, expected {i}")
    return out_dir
