"""Host-side prompt batches for generation-based evaluation: (video, question) pairs -> a left-padded HF-style
batch (what an HF processor + chat template with `add_generation_prompt=True` would produce)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipelines.grain.text import SpecialIds, encode, render_chat, token_types, video_placeholder
from stvl_jax.models.qwen_vl.host.placeholders import video_block_tokens
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig, process_video
from data_pipelines.video import read_video


def video_prompt(tokenizer, vision: PreprocessConfig, video_path: str, question: str, *, fps: float | None = None,
                 max_frames: int | None = None, system: str | None = None):
    """One prompt -> (input_ids (L,), token types (L,), pixel rows, grid (1, 3), second_per_grid).
    vision: the model's preprocessing (`model.preprocessing`); fps / max_frames default to its frame sampling."""
    fps = fps or vision.frames.fps
    clip = read_video(video_path, fps=fps, max_frames=max_frames or vision.frames.max_frames)
    pv, grid = process_video(clip.frames, vision)
    content = video_placeholder(grid[0], vision.family, clip.times, vision.temporal_patch_size) + question
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    text, _ = render_chat(messages, add_generation_prompt=True)
    ids = SpecialIds.from_tokenizer(tokenizer)
    input_ids, _ = encode(tokenizer, text, [], {ids.video_pad: video_block_tokens(grid[0], vision.merge_size,
                                                                                 vision.family)})
    return input_ids, token_types(input_ids, ids), pv, grid, vision.temporal_patch_size / fps


def video_prompt_batch(tokenizer, vision: PreprocessConfig, items: Sequence[tuple[str, str]], **kw) -> dict:
    """[(video_path, question)] -> left-padded batch dict with `pixel_values_videos`/`video_grid_thw`
    (+ `second_per_grid_ts` for Qwen2.5-VL)."""
    return collate_prompts(tokenizer, vision, [video_prompt(tokenizer, vision, path, q, **kw) for path, q in items])


def collate_prompts(tokenizer, vision: PreprocessConfig, rows: Sequence[tuple], length: int | None = None) -> dict:
    """`video_prompt` results -> the left-padded batch of `video_prompt_batch`, `length` tokens wide (at least the
    longest row; fewer distinct widths, fewer compiles). Rows whose pixels are None are text only (all or none)."""
    length = max(length or 0, max(len(r[0]) for r in rows))
    pad = SpecialIds.from_tokenizer(tokenizer).pad
    ids = np.full((len(rows), length), pad, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    types = np.zeros((len(rows), length), np.int64)
    for b, (row_ids, row_types, *_ ) in enumerate(rows):
        ids[b, length - len(row_ids):] = row_ids
        types[b, length - len(row_ids):] = row_types
        mask[b, length - len(row_ids):] = 1
    batch = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types)
    if rows[0][2] is None:
        return batch
    batch.update(pixel_values_videos=np.concatenate([r[2] for r in rows]),
                 video_grid_thw=np.concatenate([r[3] for r in rows]))
    if vision.family == "qwen2_5_vl":
        batch["second_per_grid_ts"] = np.asarray([r[4] for r in rows], np.float32)
    return batch
