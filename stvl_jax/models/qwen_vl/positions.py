"""M-RoPE position ids on the host (numpy): `get_rope_index` for Qwen3-VL and Qwen2.5-VL.

Pure numpy, importable without JAX, so Grain transforms compute the same ids the model uses.

Rules (transformers 5.23 semantics):
- tokens are grouped into runs of text / image / video (`mm_token_type_ids`: 0, 1, 2, or derived from the
  placeholder token ids); padding (attention_mask == 0) is skipped and gets position 0;
- a text run continues the counter on all three rows;
- a vision run of grid (t, h, w) (merged: h/m, w/m) gets T = start + floor(arange(t) * interval),
  H = start + row, W = start + col; `interval` is 1 for images and Qwen3-VL videos (whose video grids are split
  into one grid per temporal patch, each behind its own text timestamp) and `tokens_per_second *
  second_per_grid_t` for Qwen2.5-VL videos;
- after a vision run the counter advances by max(h, w) / m (transformers) — or, for Qwen2.5-VL with
  `video_position_advance="qwen"`, to 1 + the largest position the run used (the original Qwen release);
- rope_deltas = 1 + max position - number of real tokens (decoding continues at position len + delta).
"""

from __future__ import annotations

import itertools

import numpy as np

TEXT, IMAGE, VIDEO = 0, 1, 2


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


def _runs(types: np.ndarray):
    """Yield (type, start, end) for maximal runs of equal values."""
    if len(types) == 0:
        return
    change = np.flatnonzero(np.diff(types)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(types)]])
    for s, e in zip(starts, ends):
        yield int(types[s]), int(s), int(e)


def vision_run_positions(start: int, grid_thw, merge: int, interval: float = 1.0) -> np.ndarray:
    """(3, t*h*w/m^2) positions of one image/video run starting at `start`."""
    t, h, w = (int(x) for x in grid_thw)
    h, w = h // merge, w // merge
    # float32 like PyTorch, so the floor lands on the same side of integer boundaries
    tt = np.floor(np.arange(t, dtype=np.float32) * np.float32(interval)).astype(np.int64)
    grid_t, grid_h, grid_w = np.meshgrid(tt, np.arange(h), np.arange(w), indexing="ij")
    return np.stack([grid_t.ravel(), grid_h.ravel(), grid_w.ravel()]) + start


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
    """3-D rotary position ids. input_ids (B, L) -> position_ids (3, B, L) int64, rope_deltas (B, 1) int64."""
    if family not in ("qwen3_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown family {family!r}")
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {input_ids.shape}")
    bsz, length = input_ids.shape
    types = (
        mm_token_types(input_ids, image_token_id, video_token_id)
        if mm_token_type_ids is None
        else np.asarray(mm_token_type_ids)
    )
    mask = np.ones_like(input_ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)

    image_grids = iter(np.asarray(image_grid_thw, np.int64).reshape(-1, 3)) if image_grid_thw is not None else None
    if video_grid_thw is not None:
        vg = np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
        video_grids = iter(split_video_grids_per_frame_group(vg) if family == "qwen3_vl" else vg)
    else:
        video_grids = None
    seconds = (
        itertools.repeat(1.0) if second_per_grid_ts is None else iter(np.asarray(second_per_grid_ts, np.float32))
    )

    position_ids = np.zeros((3, bsz, length), np.int64)
    deltas = np.zeros((bsz, 1), np.int64)
    for b in range(bsz):
        row_types = types[b][mask[b]]
        pieces, pos = [], 0
        for kind, s, e in _runs(row_types):
            if kind == TEXT:
                pieces.append(np.broadcast_to(np.arange(e - s) + pos, (3, e - s)))
                pos += e - s
                continue
            grids = image_grids if kind == IMAGE else video_grids
            name = "image_grid_thw" if kind == IMAGE else "video_grid_thw"
            grid = next(grids, None) if grids is not None else None
            if grid is None:
                raise ValueError(f"row {b}: more {name.split('_')[0]} placeholder runs than entries in {name}")
            interval = 1.0
            if kind == VIDEO and family == "qwen2_5_vl":
                interval = np.float32(tokens_per_second) * np.float32(next(seconds))
            run = vision_run_positions(pos, grid, spatial_merge_size, interval)
            if run.shape[1] != e - s:
                raise ValueError(
                    f"row {b}: a {name.split('_')[0]} run has {e - s} placeholder tokens but its grid {tuple(grid)} "
                    f"gives {run.shape[1]} merged tokens"
                )
            pieces.append(run)
            if video_position_advance == "qwen" and family == "qwen2_5_vl":
                pos = int(run.max()) + 1
            else:
                pos += max(int(grid[1]), int(grid[2])) // spatial_merge_size
        if pieces:
            row = np.concatenate(pieces, axis=1)
            position_ids[:, b, mask[b]] = row
            deltas[b, 0] = row.max() + 1 - row.shape[1]
    return position_ids, deltas


def get_rope_index_for_config(config, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """`get_rope_index` with the token ids and merge/tps settings of a `QwenVLConfig`."""
    return get_rope_index(
        batch["input_ids"],
        image_grid_thw=batch.get("image_grid_thw"),
        video_grid_thw=batch.get("video_grid_thw"),
        attention_mask=batch.get("attention_mask"),
        mm_token_type_ids=batch.get("mm_token_type_ids"),
        second_per_grid_ts=batch.get("second_per_grid_ts"),
        family=config.family,
        spatial_merge_size=config.vision.spatial_merge_size,
        tokens_per_second=config.vision.tokens_per_second or 1,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        video_position_advance=config.video_position_advance,
    )
