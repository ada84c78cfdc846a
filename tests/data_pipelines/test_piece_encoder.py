"""`PieceEncoder` (tokenizing the pieces between added tokens, cached) gives the ids and offsets of tokenizing the
whole text, for the tiny tokenizer and a Qwen2-style one (NFC normalizer, split regex + byte-level); where the
pieces are not independent (Metaspace pre-tokenizer) it declines and `encode` tokenizes the whole text."""

import numpy as np
import pytest

from data_pipelines.grain.text import PieceEncoder, encode

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>",
            "<|image_pad|>", "<act", "<activation>"]  # "<act" is a prefix of "<activation>": longest must win
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
CORPUS = ["the red circle enters from the left at 1.5 seconds", "a blue square bounces; café naïve e\u0301",
          "<0.5 seconds> <12.0 seconds> what happens?", "Describe the video.\n\n  It moves   right."]


def _fast(kind):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>" if kind == "metaspace" else None))
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if kind != "metaspace" else []
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS + (["<unk>"] if kind == "metaspace" else []),
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _texts(rng, n):
    words = ["the", " red", "circle", " at", " 1.5", "s", "<0.5 seconds>", "<1.0 seconds>", "\n", "  ", "café",
             "e\u0301", " naïve", "?", "assistant\n", "user\n", "  It", "<", ">", "act", "ivation"]
    out = []
    for _ in range(n):
        parts = [rng.choice(SPECIALS) if rng.random() < 0.3 else rng.choice(words) for _ in range(rng.integers(0, 40))]
        out.append("".join(parts))
    return out


@pytest.mark.parametrize("kind", ["tiny", "qwen2"])
def test_pieces_give_the_whole_text_ids_and_offsets(kind):
    tok = _fast(kind)
    backend = tok._tokenizer
    pieces = PieceEncoder(backend)
    assert pieces.ok
    texts = _texts(np.random.default_rng(0), 300)
    for text in texts + texts:  # the second pass runs from the cache
        whole = backend.encode(text, add_special_tokens=False)
        ids, starts = pieces(text)
        assert ids == whole.ids, text
        np.testing.assert_array_equal(starts, [o[0] for o in whole.offsets], err_msg=text)
    assert pieces.turns and pieces.pieces


def test_labels_from_piece_offsets_equal_the_hf_call():
    tok = _fast("qwen2")
    rng = np.random.default_rng(1)
    for text in _texts(rng, 100):
        spans = [tuple(sorted(rng.integers(0, len(text) + 1, 2))) for _ in range(2)]
        ids, labels = encode(tok, text, spans)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        keep = [any(s <= o[0] < e for s, e in spans) for o in enc["offset_mapping"]]
        np.testing.assert_array_equal(ids, enc["input_ids"])
        np.testing.assert_array_equal(labels, np.where(keep, enc["input_ids"], -100))


def test_metaspace_tokenizers_are_tokenized_whole():
    tok = _fast("metaspace")
    assert not PieceEncoder(tok._tokenizer).ok
    text = "the red<|im_end|>circle at<|video_pad|> 1.5"
    ids, _ = encode(tok, text, [])
    np.testing.assert_array_equal(ids, tok(text, add_special_tokens=False)["input_ids"])
