"""ChatML rendering with expanded vision placeholders, tokenization, labels and token types.

`render_chat` produces exactly what the tokenizer's chat template renders (tested) and records the character
spans that carry loss (assistant content + its `<|im_end|>`, the ms-swift default). Vision parts are rendered
compact — one pad token per block — and `encode` tokenizes once, maps spans to token labels via offsets, then
repeats each pad token to its block's count. Special tokens are split off before the BPE, so this gives the
same ids as tokenizing the fully expanded text (tested) at a fraction of the cost (the pads are most tokens);
`PieceEncoder` goes further and runs the BPE only on pieces between added tokens it has not seen before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.formats.streamo import STATE_TOKENS
from stvl_jax.models.qwen_vl.host.preprocess import group_timestamps

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    image_pad: int
    video_pad: int
    activation: int
    active: int
    inactive: int
    im_end: int
    states: tuple[int, ...]  # Streamo's </Silence>, </Standby>, </Response> (-1 where the tokenizer has none)

    @classmethod
    def from_tokenizer(cls, tok) -> "SpecialIds":
        ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
            ("image_pad", IMAGE_PAD), ("video_pad", VIDEO_PAD), ("activation", "<activation>"),
            ("active", "<active>"), ("inactive", "<inactive>"), ("im_end", IM_END))}
        unk = getattr(tok, "unk_token_id", None)
        for name in ("image_pad", "video_pad"):
            if ids[name] is None or ids[name] == unk:
                raise ValueError(f"tokenizer has no {name} token")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
        states = tuple(-1 if (i := tok.convert_tokens_to_ids(t)) is None or i == unk else int(i) for t in STATE_TOKENS)
        return cls(pad=int(pad), states=states, **{k: int(v) if v is not None else -1 for k, v in ids.items()})


def image_placeholder() -> str:
    """One image block, compact (`encode` expands the pad to tokens_per_grid(grid, merge))."""
    return VISION_START + IMAGE_PAD + VISION_END


def video_placeholder(grid_thw, family: str, times=None, temporal_patch_size: int = 2) -> str:
    """Qwen3-VL: one `<t seconds><|vision_start|><|video_pad|><|vision_end|>` block per temporal group (t =
    mean time of the group's frames); Qwen2.5-VL: one block for the whole video. Compact: `encode` expands
    each pad to its block's token count (`host.placeholders.vision_pad_counts`)."""
    block = VISION_START + VIDEO_PAD + VISION_END
    if family == "qwen2_5_vl":
        return block
    stamps = group_timestamps(times, temporal_patch_size)
    if len(stamps) != int(grid_thw[0]):
        raise ValueError(f"{len(stamps)} timestamps for a video grid with t={int(grid_thw[0])}")
    return "".join(f"<{s:.1f} seconds>" + block for s in stamps)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """messages [{"role", "content": str}] (content already expanded) -> (text, loss spans [(start, end))).

    Assistant turns carry loss on their content and the closing `<|im_end|>` (not the trailing newline)."""
    parts, spans, pos = [], [], 0
    for m in messages:
        head = f"{IM_START}{m['role']}\n"
        body = m["content"] + IM_END
        parts += [head, body, "\n"]
        if m["role"] == "assistant":
            spans.append((pos + len(head), pos + len(head) + len(body)))
        pos += len(head) + len(body) + 1
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts), spans


class PieceEncoder:
    """Tokenizes text piece by piece: split at the tokenizer's added tokens, cache the ids of pieces seen before.

    The Rust tokenizer splits added tokens off first and normalizes / pre-tokenizes / BPEs each piece between
    them on its own, so the pieces' ids concatenated are the ids of the whole text. Two levels: the text is
    cut into turns at `<|im_start|>` (a whole user turn — `<t seconds>` stamps, placeholders, a fixed question —
    often repeats across records), and a turn not seen before into the pieces between all added tokens (stamps,
    role heads, special tokens repeat), so the BPE runs only on new text. Used only where that independence is
    known to hold: plain added tokens (no lstrip / rstrip / single_word) and no Metaspace pre-tokenizer (whose
    prefix depends on the piece being first)."""

    TURN_CHARS, PIECE_CHARS = 4096, 256  # longest turn / piece kept in its cache
    MAX_ENTRIES = 4096  # per cache; a full cache is emptied (unique turns, e.g. answers, fill the turn cache)

    def __init__(self, backend):
        import re

        self.backend = backend
        added = backend.get_added_tokens_decoder().values()
        plain = all(not (t.lstrip or t.rstrip or t.single_word) for t in added)
        pre = backend.pre_tokenizer.__getstate__().decode() if backend.pre_tokenizer is not None else ""
        contents = {t.content for t in added}
        self.ok = bool(contents) and plain and "Metaspace" not in pre
        # longest first: the Rust splitter takes the leftmost-longest added token
        alternatives = "|".join(map(re.escape, sorted(contents, key=len, reverse=True)))
        self.fine = re.compile(f"({alternatives})").split if self.ok else None
        self.coarse = re.compile(f"({re.escape(IM_START)})").split if IM_START in contents else self.fine
        self.turns: dict[str, tuple[list[int], np.ndarray]] = {}
        self.pieces: dict[str, tuple[list[int], np.ndarray]] = {}

    def _bpe(self, piece: str) -> tuple[list[int], np.ndarray]:
        enc = self.backend.encode(piece, add_special_tokens=False)
        return enc.ids, np.asarray([o[0] for o in enc.offsets], np.int64)

    def _turn(self, turn: str) -> tuple[list[int], np.ndarray]:
        return self._join(self.fine(turn), self._bpe, self.pieces, self.PIECE_CHARS)

    def _join(self, parts, encode, cache, max_chars) -> tuple[list[int], np.ndarray]:
        ids, starts, shifts, pos = [], [], [], 0
        for part in parts:
            if not part:
                continue
            hit = cache.get(part)
            if hit is None:
                hit = encode(part)
                if len(part) <= max_chars:
                    if len(cache) >= self.MAX_ENTRIES:
                        cache.clear()
                    cache[part] = hit
            ids += hit[0]
            starts.append(hit[1])
            shifts.append((pos, len(hit[0])))
            pos += len(part)
        if not shifts:
            return [], np.zeros(0, np.int64)
        at, counts = zip(*shifts)
        return ids, np.concatenate(starts) + np.repeat(at, counts)

    def __call__(self, text: str) -> tuple[list[int], np.ndarray]:
        """text -> (ids, start offset of each token in text)."""
        return self._join(self.coarse(text), self._turn, self.turns, self.TURN_CHARS)


_PIECE_ENCODERS: dict[int, PieceEncoder] = {}


def _piece_encoder(backend) -> PieceEncoder:
    enc = _PIECE_ENCODERS.get(id(backend))
    if enc is None or enc.backend is not backend:
        enc = _PIECE_ENCODERS[id(backend)] = PieceEncoder(backend)
    return enc


def encode(tokenizer, text: str, spans: list[tuple[int, int]], pads: dict[int, list[int]] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize -> (input_ids (L,) int32, labels (L,) int32 with -100 outside loss spans).

    `pads` {pad token id: [count per occurrence]}: the k-th occurrence of that id in the compact text becomes
    count[k] copies (with its label). Raises ValueError when the occurrences and counts disagree (e.g. the
    record's own text contains a pad token)."""
    backend = getattr(tokenizer, "_tokenizer", None)  # the Rust tokenizer of a fast HF tokenizer
    if backend is not None and backend.truncation is None and backend.padding is None:
        pieces = _piece_encoder(backend)
        if pieces.ok:
            ids, starts = pieces(text)
        else:
            enc = backend.encode(text, add_special_tokens=False)  # what the HF call runs, minus its Python wrapping
            ids, starts = enc.ids, [o[0] for o in enc.offsets]
    else:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, starts = enc["input_ids"], [o[0] for o in enc["offset_mapping"]]
    ids = np.asarray(ids, dtype=np.int32)
    starts = np.asarray(starts, dtype=np.int64)
    keep = np.zeros(len(ids), dtype=bool)
    for s, e in spans:
        keep |= (starts >= s) & (starts < e)
    labels = np.where(keep, ids, -100).astype(np.int32)
    if pads:
        reps = np.ones(len(ids), np.int64)
        for pad_id, counts in pads.items():
            at = np.flatnonzero(ids == pad_id)
            if len(at) != len(counts):
                raise ValueError(f"{len(at)} pad tokens {pad_id} in the text for {len(counts)} vision blocks")
            reps[at] = counts
        ids, labels = np.repeat(ids, reps), np.repeat(labels, reps)
    return ids, labels


def token_types(input_ids: np.ndarray, ids: SpecialIds) -> np.ndarray:
    """0 text, 1 image placeholder, 2 video placeholder."""
    t = np.zeros(input_ids.shape, dtype=np.int32)
    t[input_ids == ids.image_pad] = 1
    t[input_ids == ids.video_pad] = 2
    return t
