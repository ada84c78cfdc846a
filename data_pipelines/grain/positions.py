"""M-RoPE position ids of one unpadded example, the fast way for the per-record transform.

Same rules as the model's `stvl_jax.models.qwen_vl.positions.get_rope_index` (transformers semantics, text
resumes at start + max(h, w) / merge after a vision run) and tested equal to it; the (3, n) offsets of a
vision run are cached per (grid, interval), so an example costs a few array writes per run instead of a
meshgrid each (a Qwen3-VL video is one run per temporal group).
"""

from __future__ import annotations

import functools

import numpy as np

from stvl_jax.models.qwen_vl.positions import (
    IMAGE, TEXT, VIDEO, split_video_grids_per_frame_group, vision_run_positions,
)


@functools.lru_cache(maxsize=1024)
def _run_offsets(t: int, h: int, w: int, merge: int, interval: float) -> np.ndarray:
    out = vision_run_positions(0, (t, h, w), merge, interval)
    out.setflags(write=False)
    return out


def example_positions(types: np.ndarray, image_grid_thw: np.ndarray, video_grid_thw: np.ndarray,
                      second_per_grid_ts=None, *, family: str, merge: int, tokens_per_second: float) -> np.ndarray:
    """types (L,) 0 text / 1 image / 2 video -> position ids (3, L) int32, equal to
    `get_rope_index(types[None] ..., mm_token_type_ids=types[None])[0][:, 0]`. ValueError on a run/grid mismatch."""
    videos = np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
    grids = {IMAGE: np.asarray(image_grid_thw, np.int64).reshape(-1, 3).tolist(),
             VIDEO: (split_video_grids_per_frame_group(videos) if family == "qwen3_vl" else videos).tolist()}
    used = {IMAGE: 0, VIDEO: 0}
    secs = None if second_per_grid_ts is None else np.asarray(second_per_grid_ts, np.float32).reshape(-1)
    bounds = [0, *(np.flatnonzero(types[1:] != types[:-1]) + 1).tolist(), len(types)]
    out = np.empty((3, len(types)), np.int32)
    pos = 0
    for s, e in zip(bounds[:-1], bounds[1:]):
        kind = int(types[s])
        if kind == TEXT:
            out[:, s:e] = np.arange(pos, pos + e - s)
            pos += e - s
            continue
        k = used[kind]
        if k >= len(grids[kind]):
            raise ValueError(f"more {'image' if kind == IMAGE else 'video'} placeholder runs than grid entries")
        t, h, w = grids[kind][k]
        used[kind] = k + 1
        interval = 1.0
        if kind != IMAGE and family == "qwen2_5_vl":
            interval = float(np.float32(tokens_per_second) * (secs[k] if secs is not None else np.float32(1.0)))
        offsets = _run_offsets(t, h, w, merge, interval)
        if offsets.shape[1] != e - s:
            raise ValueError(f"a vision run has {e - s} placeholder tokens but its grid {(t, h, w)} gives "
                             f"{offsets.shape[1]} merged tokens")
        out[:, s:e] = offsets + pos
        pos += max(h, w) // merge
    return out
