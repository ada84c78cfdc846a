"""ChatML rendering with expanded vision placeholders, tokenization, labels and token types.

`render_chat` produces exactly what the tokenizer's chat template renders (tested) with each vision part
already expanded, and records the character spans that carry loss (assistant content + its `<|im_end|>`,
the ms-swift default). `encode` tokenizes once and maps spans to token labels via offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.processor import group_timestamps, tokens_per_grid

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

    @classmethod
    def from_tokenizer(cls, tok) -> "SpecialIds":
        ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
            ("image_pad", IMAGE_PAD), ("video_pad", VIDEO_PAD), ("activation", "<activation>"),
            ("active", "<active>"), ("inactive", "<inactive>"))}
        unk = getattr(tok, "unk_token_id", None)
        for name in ("image_pad", "video_pad"):
            if ids[name] is None or ids[name] == unk:
                raise ValueError(f"tokenizer has no {name} token")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
        return cls(pad=int(pad), **{k: int(v) if v is not None else -1 for k, v in ids.items()})


def image_placeholder(grid_thw, merge: int) -> str:
    return VISION_START + IMAGE_PAD * tokens_per_grid(grid_thw, merge) + VISION_END


def video_placeholder(grid_thw, merge: int, family: str, times=None, temporal_patch_size: int = 2) -> str:
    """Qwen3-VL: one `<t seconds><|vision_start|>pads<|vision_end|>` block per temporal group (t = mean time
    of the group's frames); Qwen2.5-VL: one block for the whole video."""
    t, h, w = (int(v) for v in grid_thw)
    if family == "qwen2_5_vl":
        return VISION_START + VIDEO_PAD * tokens_per_grid(grid_thw, merge) + VISION_END
    stamps = group_timestamps(times, temporal_patch_size)
    if len(stamps) != t:
        raise ValueError(f"{len(stamps)} timestamps for a video grid with t={t}")
    block = VISION_START + VIDEO_PAD * tokens_per_grid((1, h, w), merge) + VISION_END
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


def encode(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize -> (input_ids (L,) int32, labels (L,) int32 with -100 outside loss spans)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    starts = np.asarray([o[0] for o in enc["offset_mapping"]], dtype=np.int64)
    keep = np.zeros(len(ids), dtype=bool)
    for s, e in spans:
        keep |= (starts >= s) & (starts < e)
    labels = np.where(keep, ids, -100).astype(np.int32)
    return ids, labels


def token_types(input_ids: np.ndarray, ids: SpecialIds) -> np.ndarray:
    """0 text, 1 image placeholder, 2 video placeholder."""
    t = np.zeros(input_ids.shape, dtype=np.int32)
    t[input_ids == ids.image_pad] = 1
    t[input_ids == ids.video_pad] = 2
    return t
