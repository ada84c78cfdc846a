"""M-RoPE position ids on the host (numpy): the one implementation for Qwen3-VL and Qwen2.5-VL, used by the Grain
pipeline (`example_positions`, per unpadded example) and by the model's own fallback (`get_rope_index`, per padded
batch), so training and inference place every token at the same position.

Rules (transformers 5.23 semantics unless `video_position_advance="qwen"`):
- tokens are grouped into runs of text / image / video (`mm_token_type_ids`: 0, 1, 2, or derived from the
  placeholder token ids); padding (attention_mask == 0) is skipped and gets position 0;
- a text run continues the counter on all three rows;
- a vision run of grid (t, h, w) (merged: h/m, w/m) gets T = start + floor(arange(t) * interval),
  H = start + row, W = start + col; `interval` is 1 for images and Qwen3-VL videos (whose video grids are split
  into one grid per temporal patch, each behind its own text timestamp) and `tokens_per_second *
  second_per_grid_t` for Qwen2.5-VL videos;
- after a vision run the counter advances by max(h, w) / m (transformers) — or, for Qwen2.5-VL with
  `video_position_advance="qwen"`, to 1 + the largest position the run used (the original Qwen2.5-VL release,
  transformers 4.x);
- rope_deltas = 1 + max position - number of real tokens (decoding continues at position len + delta).

The (3, n) offsets of a vision run are cached per (grid, merge, interval): an example costs a few array writes per
run instead of a meshgrid each (a Qwen3-VL video is one run per temporal group).
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pydantic

from stvl_jax.config_base import StrictConfig

TEXT, IMAGE, VIDEO = 0, 1, 2
ADVANCES = ("transformers", "qwen")


class PositionsConfig(StrictConfig):
    """The model's position settings a host needs besides the family and merge size (Qwen2.5-VL only): the
    temporal scale of video positions and where text resumes after a video. `QwenVLConfig.positions` gives a
    model's; the training pipeline gets them from the model it feeds."""

    tokens_per_second: float = pydantic.Field(default=2.0, gt=0)
    video_position_advance: Literal["transformers", "qwen"] = "transformers"


def mm_token_types(input_ids: np.ndarray, image_token_id: int, video_token_id: int) -> np.ndarray:
    """(B, L) token types from placeholder ids: 0 text, 1 image, 2 video."""
    types = np.zeros(np.shape(input_ids), np.int32)
    types[input_ids == image_token_id] = IMAGE
    types[input_ids == video_token_id] = VIDEO
    return types


def split_video_grids_per_frame_group(video_grid_thw: np.ndarray) -> np.ndarray:
    """Qwen3-VL: (n, 3) video grids -> one (1, h, w) grid per temporal patch (sum(t) rows)."""
    grids = np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
    out = np.repeat(grids, grids[:, 0], axis=0)
    out[:, 0] = 1
    return out


def vision_run_positions(start: int, grid_thw, merge: int, interval: float = 1.0) -> np.ndarray:
    """(3, t*h*w/m^2) positions of one image/video run starting at `start`."""
    t, h, w = (int(x) for x in grid_thw)
    h, w = h // merge, w // merge
    # float32 like PyTorch, so the floor lands on the same side of integer boundaries
    tt = np.floor(np.arange(t, dtype=np.float32) * np.float32(interval)).astype(np.int64)
    grid_t, grid_h, grid_w = np.meshgrid(tt, np.arange(h), np.arange(w), indexing="ij")
    return np.stack([grid_t.ravel(), grid_h.ravel(), grid_w.ravel()]) + start


@functools.lru_cache(maxsize=1024)
def _run_offsets(t: int, h: int, w: int, merge: int, interval: float) -> tuple[np.ndarray, int]:
    """(offsets (3, n) read-only, 1 + their max) of a run starting at 0."""
    out = vision_run_positions(0, (t, h, w), merge, interval)
    out.setflags(write=False)
    return out, int(out.max()) + 1 if out.size else 0


class _Grids:
    """The grids and per-video seconds of a batch, consumed run by run in order (across rows)."""

    def __init__(self, image_grid_thw, video_grid_thw, second_per_grid_ts, family: str):
        videos = np.asarray(video_grid_thw if video_grid_thw is not None else np.zeros((0, 3)), np.int64)
        images = np.asarray(image_grid_thw if image_grid_thw is not None else np.zeros((0, 3)), np.int64)
        self.grids = {IMAGE: images.reshape(-1, 3).tolist(),
                      VIDEO: (split_video_grids_per_frame_group(videos) if family == "qwen3_vl"
                              else videos.reshape(-1, 3)).tolist()}
        self.seconds = None if second_per_grid_ts is None else \
            np.asarray(second_per_grid_ts, np.float32).reshape(-1).tolist()
        self.used = {IMAGE: 0, VIDEO: 0}

    def next(self, kind: int, where: str) -> tuple[list[int], int]:
        k = self.used[kind]
        if k >= len(self.grids[kind]):
            name = "image" if kind == IMAGE else "video"
            raise ValueError(f"{where}more {name} placeholder runs than entries in {name}_grid_thw")
        self.used[kind] = k + 1
        return self.grids[kind][k], k


def _fill(out: np.ndarray, types: np.ndarray, grids: _Grids, *, family: str, merge: int,
          positions: PositionsConfig, where: str = "") -> int:
    """Write the (3, n) positions of one unpadded row of token types into `out`; returns the max position + 1."""
    qwen_advance = family == "qwen2_5_vl" and positions.video_position_advance == "qwen"
    bounds = [0, *(np.flatnonzero(types[1:] != types[:-1]) + 1).tolist(), len(types)]
    pos = top = 0
    for s, e in zip(bounds[:-1], bounds[1:]):
        kind = int(types[s])
        if kind == TEXT:
            out[:, s:e] = np.arange(pos, pos + e - s)
            pos += e - s
            top = max(top, pos)
            continue
        (t, h, w), k = grids.next(kind, where)
        interval = 1.0
        if kind == VIDEO and family == "qwen2_5_vl":
            sec = np.float32(1.0) if grids.seconds is None else np.float32(grids.seconds[k])
            interval = float(np.float32(positions.tokens_per_second) * sec)
        offsets, span = _run_offsets(t, h, w, merge, interval)
        if offsets.shape[1] != e - s:
            name = "image" if kind == IMAGE else "video"
            raise ValueError(f"{where}a {name} run has {e - s} placeholder tokens but its grid {(t, h, w)} gives "
                             f"{offsets.shape[1]} merged tokens")
        out[:, s:e] = offsets + pos
        top = max(top, pos + span)
        pos = pos + span if qwen_advance else pos + max(h, w) // merge
    return top


def example_positions(types: np.ndarray, image_grid_thw: np.ndarray, video_grid_thw: np.ndarray,
                      second_per_grid_ts=None, *, family: str, merge: int,
                      positions: PositionsConfig | None = None) -> np.ndarray:
    """Token types (L,) of one unpadded example (0 text / 1 image / 2 video) -> position ids (3, L) int32.
    ValueError on a run/grid mismatch."""
    types = np.asarray(types)
    out = np.empty((3, len(types)), np.int32)
    _fill(out, types, _Grids(image_grid_thw, video_grid_thw, second_per_grid_ts, family), family=family,
          merge=merge, positions=positions or PositionsConfig())
    return out


def get_rope_index(
    input_ids: np.ndarray,
    *,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    mm_token_type_ids: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
    family: str = "qwen3_vl",
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
    image_token_id: int = 151655,
    video_token_id: int = 151656,
    video_position_advance: str = "transformers",
) -> tuple[np.ndarray, np.ndarray]:
    """3-D rotary position ids of a padded batch, as transformers' `get_rope_index`.
    input_ids (B, L) -> position_ids (3, B, L) int64, rope_deltas (B, 1) int64."""
    if family not in ("qwen3_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown family {family!r}")
    if video_position_advance not in ADVANCES:
        raise ValueError(f"video_position_advance must be one of {ADVANCES}, got {video_position_advance!r}")
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {input_ids.shape}")
    bsz, length = input_ids.shape
    types = (mm_token_types(input_ids, image_token_id, video_token_id) if mm_token_type_ids is None
             else np.asarray(mm_token_type_ids))
    mask = np.ones_like(input_ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    cfg = PositionsConfig(tokens_per_second=tokens_per_second or 1, video_position_advance=video_position_advance)
    grids = _Grids(image_grid_thw, video_grid_thw, second_per_grid_ts, family)
    position_ids = np.zeros((3, bsz, length), np.int64)
    deltas = np.zeros((bsz, 1), np.int64)
    for b in range(bsz):
        row_types = types[b][mask[b]]
        if not len(row_types):
            continue
        row = np.empty((3, len(row_types)), np.int64)
        top = _fill(row, row_types, grids, family=family, merge=spatial_merge_size, positions=cfg,
                    where=f"row {b}: ")
        position_ids[:, b, mask[b]] = row
        deltas[b, 0] = top - len(row_types)
    return position_ids, deltas
