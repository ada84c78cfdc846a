"""How many placeholder tokens (`<|image_pad|>` / `<|video_pad|>`) stand for one vision input: the one count rule
that prompt builders (pipeline text, eval prompts, streaming runtimes) and the model's checks share.

A grid (t, h, w) of patches becomes t*h*w / merge^2 LLM tokens. Qwen3-VL writes a video as one block per
temporal patch (each behind its own `<t seconds>` text), Qwen2.5-VL as one block.
"""

from __future__ import annotations

from collections.abc import Iterable


def tokens_per_grid(grid_thw, merge_size: int) -> int:
    """Number of LLM placeholder tokens of one grid entry (t*h*w / merge^2)."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // (merge_size * merge_size)


def video_block_tokens(grid_thw, merge_size: int, family: str) -> list[int]:
    """Placeholder counts of one video's blocks: one per temporal patch (Qwen3-VL), else one for the video."""
    t, h, w = (int(v) for v in grid_thw)
    if family == "qwen3_vl":
        return [tokens_per_grid((1, h, w), merge_size)] * t
    return [tokens_per_grid((t, h, w), merge_size)]


def vision_pad_counts(image_grids: Iterable, video_grids: Iterable, merge_size: int, family: str
                      ) -> tuple[list[int], list[int]]:
    """Placeholder counts of every image block and every video block, in order."""
    images = [tokens_per_grid(g, merge_size) for g in image_grids]
    videos = [n for g in video_grids for n in video_block_tokens(g, merge_size, family)]
    return images, videos
