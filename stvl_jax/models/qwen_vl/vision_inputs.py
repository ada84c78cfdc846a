"""Host-side preparation of the vision tower's inputs (numpy): everything that depends on `*_grid_thw`.

Grid sizes decide shapes, gathers and attention segments, so they are resolved here, outside `jit`:
- images and videos are processed as one packed sequence: image patches first, then video patches;
- Qwen3-VL: bilinear indices/weights into the learned position table (align_corners, merge-block order);
- 2-D RoPE (row, col) per patch, in merge-block order;
- attention segments: one per temporal patch (frame group) and, for Qwen2.5-VL, one per window, as
  `SegmentLayout`s; Qwen2.5-VL rows are permuted into window order here (the permutation is per merge unit,
  so permuting raw patches equals permuting embeddings) and `merged_order` undoes it after the merger;
- optional padding of the patch count to a multiple (fewer shapes to compile); padded rows are in no segment
  and are never placed into the text sequence;
- pixels given as whole frames (flat uint8 bytes, the data pipeline's `pixel_layout="frames"`): no host
  patchify; `frame_offsets` gives, per patch row, where its T patches start in those bytes, and the vision
  tower gathers the rows on the device (`gather_frame_rows`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.nn.attention import SegmentLayout
from stvl_jax.nn.shapes import bucket


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionInputs:
    """Packed vision inputs. N = padded patch rows, M = N / merge^2 merged tokens."""

    pixel_values: jax.Array  # (N, C*T*P*P) float32 or uint8, (N, T*P*P, C) uint8 (channels-last), or (S,) uint8 frames
    pos_hw: jax.Array  # (N, 2) int32 rotary (row, col)
    frame_layout: SegmentLayout  # attention within each temporal patch
    merged_order: jax.Array  # (M,) int32: merged token k (image/video order) = merger output merged_order[k]
    num_image_tokens: jax.Array  # () int32: the first num_image_tokens merged tokens belong to images
    interp_index: jax.Array | None = None  # (N, 4) int32, Qwen3-VL position-table taps
    interp_weight: jax.Array | None = None  # (N, 4) float32
    window_layout: SegmentLayout | None = None  # Qwen2.5-VL window attention
    # pixels as flat frame bytes (pixel_values (S,) uint8): per patch row, the byte offset of its patch in each
    # of its T frames, and the byte stride between its pixel lines (the frame width * C)
    frame_offsets: jax.Array | None = None  # (N, T) int32
    line_stride: jax.Array | None = None  # (N,) int32


def _check_grid(name: str, grid: np.ndarray, merge: int) -> np.ndarray:
    grid = np.asarray(grid, np.int64)
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise InputError(f"{name} must have shape (n, 3) (t, h, w), got {grid.shape}")
    if (grid <= 0).any():
        raise InputError(f"{name} has non-positive entries: {grid.tolist()}")
    if (grid[:, 1:] % merge).any():
        raise InputError(f"{name}: h and w must be multiples of spatial_merge_size={merge}, got {grid.tolist()}")
    return grid


def merge_block_rows_cols(h: int, w: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each patch of an h x w grid listed in 2x2 (merge x merge) block order."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    return rows.reshape(shape).transpose(0, 2, 1, 3).ravel(), cols.reshape(shape).transpose(0, 2, 1, 3).ravel()


def frame_offsets(grid: np.ndarray, frames_per_group: np.ndarray, patch: int, temporal: int, merge: int,
                  channels: int = 3) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat frame bytes -> where each patch row's pixels are (see `vision.gather_frame_rows`).

    grid: (n, 3) (t, h, w) in patches; frames_per_group: (n,) frames stored per temporal group (T for a video,
    1 for an image, which the gather repeats). Entries' frames are consecutive (H, W, C) uint8 images, entry
    after entry. Returns offsets (rows, T) int64 of each row's top-left pixel in its T frames, in the rows' order
    (groups, then merge blocks, as `merge_block_rows_cols`), line strides (rows,) int64, and the total bytes.
    """
    offsets, strides, base = [], [], 0
    for (t, h, w), fpg in zip(grid, frames_per_group):
        line = w * patch * channels
        frame = h * patch * line
        r, c = merge_block_rows_cols(h, w, merge)
        in_frame = r * patch * line + c * patch * channels  # (h*w,)
        # frame index of temporal slot k in group g: g*fpg + min(k, fpg-1) (an image repeats its one frame)
        slot = np.arange(t)[:, None] * fpg + np.minimum(np.arange(temporal), fpg - 1)[None, :]  # (t, T)
        offsets.append((base + slot[:, None, :] * frame + in_frame[None, :, None]).reshape(-1, temporal))
        strides.append(np.full(t * h * w, line, np.int64))
        base += t * fpg * frame
    if not offsets:
        return np.zeros((0, temporal), np.int64), np.zeros((0,), np.int64), 0
    return np.concatenate(offsets), np.concatenate(strides), base


def _bilinear_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """align_corners=True bilinear taps (floor, floor+1) and weights, in float32 like PyTorch."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
    floor = np.floor(src)
    offsets = np.arange(2)
    taps = np.clip(floor.astype(np.int64)[:, None] + offsets, 0, side - 1)
    weights = np.clip(1 - np.abs(src[:, None] - floor[:, None] - offsets), 0, None).astype(np.float32)
    return taps, weights


def position_table_taps(grid: np.ndarray, side: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3-VL: (rows, 4) gather indices and weights resampling a side x side table to each grid."""
    idx, wts = [], []
    for t, h, w in grid:
        r, c = merge_block_rows_cols(h, w, merge)
        rt, rw = _bilinear_taps(r, h, side)
        ct, cw = _bilinear_taps(c, w, side)
        i = (rt[:, :, None] * side + ct[:, None, :]).reshape(-1, 4)
        wt = (rw[:, :, None] * cw[:, None, :]).reshape(-1, 4)
        idx.append(np.tile(i, (t, 1)))
        wts.append(np.tile(wt, (t, 1)))
    return np.concatenate(idx).astype(np.int32), np.concatenate(wts).astype(np.float32)


def window_permutation(grid: np.ndarray, merge: int, window_merged: int) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL: merge-unit permutation into window order and the window id of each permuted unit.

    Windows tile each frame's merged grid in `window_merged` x `window_merged` cells (ragged at the edges).
    """
    perm, window_of_unit = [], []
    unit_offset = window_offset = 0
    for t, h, w in grid:
        lh, lw = h // merge, w // merge
        nh, nw = -(-lh // window_merged), -(-lw // window_merged)
        units = np.arange(t * lh * lw).reshape(t, lh, lw)
        tt, rr, cc = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
        win = (tt * nh + rr // window_merged) * nw + cc // window_merged  # window id per unit
        key = np.stack([win.ravel(), rr.ravel() % window_merged, cc.ravel() % window_merged])
        order = np.lexsort(key[::-1])  # window-major, then row, then col inside the window
        perm.append(units.ravel()[order] + unit_offset)
        window_of_unit.append(win.ravel()[order] + window_offset)
        unit_offset += t * lh * lw
        window_offset += t * nh * nw
    return np.concatenate(perm), np.concatenate(window_of_unit)


def prepare_vision_inputs(
    config: QwenVLConfig,
    *,
    pixel_values: np.ndarray | None = None,
    image_grid_thw: np.ndarray | None = None,
    pixel_values_videos: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    pad_to_multiple: int | None = None,
    buckets: bool = False,
) -> VisionInputs | None:
    """Pack images then videos into one `VisionInputs` (None when the batch has no pixels).

    buckets: pad the patch rows and the number of attention segments to `bucket()` sizes (static shapes for
    jit across batches of different frame counts); pad_to_multiple: additionally round the rows up."""
    vc = config.vision
    merge, unit = vc.spatial_merge_size, vc.merge_unit
    pixels, grids, frames_per_group, num_image_tokens = [], [], [], 0
    for name, pv, grid in (
        ("image", pixel_values, image_grid_thw),
        ("video", pixel_values_videos, video_grid_thw),
    ):
        if pv is None and grid is None:
            continue
        if pv is None or grid is None:
            raise InputError(f"{name}: pixel values and grid_thw must be given together")
        grid = _check_grid(f"{name}_grid_thw", grid, merge)
        pv = np.asarray(pv)
        channels_last = vc.channels_last_row
        if pv.ndim == 3 and pv.shape[1:] == channels_last and not np.issubdtype(pv.dtype, np.integer):
            raise InputError(f"{name} pixel values in the channels-last layout {pv.shape} must be raw uint8 pixels")
        fpg = 1 if name == "image" else vc.temporal_patch_size  # frames stored per temporal patch
        if pv.ndim == 1:  # whole frames, flat bytes
            if not np.issubdtype(pv.dtype, np.integer):
                raise InputError(f"{name} pixel values as flat frame bytes {pv.shape} must be raw uint8 pixels")
            want = int((grid.prod(-1) * fpg).sum()) * vc.patch_size**2 * vc.in_channels
            if pv.shape[0] != want:
                raise InputError(f"{name} pixel values have {pv.shape[0]} frame bytes but {name}_grid_thw "
                                 f"{grid.tolist()} describes {want} ({fpg} frame(s) per temporal patch)")
        elif not ((pv.ndim == 2 and pv.shape[1] == vc.patch_dim) or (pv.ndim == 3 and pv.shape[1:] == channels_last)):
            raise InputError(
                f"{name} pixel values must have shape (patches, {vc.patch_dim}) = (patches, C*T*P*P), or raw uint8 "
                f"(patches, {channels_last[0]}, {channels_last[1]}) = (patches, T*P*P, C), or raw uint8 frame "
                f"bytes (frames*H*W*C,), got {pv.shape}"
            )
        elif pv.shape[0] != int(grid.prod(-1).sum()):
            raise InputError(
                f"{name} pixel values have {pv.shape[0]} patch rows but {name}_grid_thw {grid.tolist()} "
                f"describes {int(grid.prod(-1).sum())}"
            )
        if not len(grid):  # an empty part (a batch without images, say) is no part
            continue
        pixels.append(pv)
        grids.append(grid)
        frames_per_group.append(np.full(len(grid), fpg))
        if name == "image":
            num_image_tokens = int(grid.prod(-1).sum()) // unit
    if not pixels:
        return None
    grid = np.concatenate(grids)
    if len({(np.issubdtype(p.dtype, np.integer), p.ndim) for p in pixels}) > 1:
        raise InputError("image and video pixel values must both be normalized floats or both raw uint8 in the "
                         f"same layout, got {[(str(p.dtype), p.shape) for p in pixels]}")
    pv = np.concatenate(pixels)
    if np.issubdtype(pv.dtype, np.integer) and pv.dtype != np.uint8 and pv.size and (pv.min() < 0 or pv.max() > 255):
        raise InputError(f"integer pixel values must be raw 0..255, got {pv.min()}..{pv.max()}")
    pv = pv.astype(np.uint8 if np.issubdtype(pv.dtype, np.integer) else np.float32, copy=False)
    n = int(grid.prod(-1).sum())
    if pv.ndim == 1:  # rows_of: the per-row arrays, which follow the rows through permutation and padding
        offsets, strides, _ = frame_offsets(grid, np.concatenate(frames_per_group), vc.patch_size,
                                            vc.temporal_patch_size, merge, vc.in_channels)
        if len(pv) and offsets.max() + strides.max() * vc.patch_size >= 2**31:
            raise InputError(f"{len(pv)} bytes of frames in one batch: the device gather indexes them with int32")
        rows_of = {"frame_offsets": offsets.astype(np.int32), "line_stride": strides.astype(np.int32)}
    else:
        rows_of = {"pixel_values": pv}

    rows, cols = zip(*(merge_block_rows_cols(h, w, merge) for _, h, w in grid))
    pos_hw = np.concatenate(
        [np.tile(np.stack([r, c], -1), (t, 1)) for (t, _, _), r, c in zip(grid, rows, cols)]
    ).astype(np.int32)
    frame_ids = np.repeat(np.arange(int(grid[:, 0].sum())), np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0]))

    extra = {}
    if config.family == "qwen3_vl":
        side = int(round(vc.num_position_embeddings**0.5))
        extra["interp_index"], extra["interp_weight"] = position_table_taps(grid, side, merge)
        merged_order = np.arange(n // unit)
    else:
        window_merged = vc.window_size // merge // vc.patch_size
        perm_units, window_of_unit = window_permutation(grid, merge, window_merged)
        row_perm = (perm_units[:, None] * unit + np.arange(unit)).ravel()
        pos_hw = pos_hw[row_perm]
        rows_of = {k: v[row_perm] for k, v in rows_of.items()}
        # frames stay contiguous and in order under the permutation, so frame_ids need no change
        window_ids = np.repeat(window_of_unit, unit)
        merged_order = np.argsort(perm_units)

    target = bucket(n, minimum=4 * unit) if buckets else n
    if pad_to_multiple:
        if pad_to_multiple % unit:
            raise ValueError(f"pad_to_multiple={pad_to_multiple} must be a multiple of merge^2={unit}")
        target += -target % pad_to_multiple
    pad = target - n

    def padded(a, value=0):
        return np.concatenate([a, np.full((pad, *a.shape[1:]), value, a.dtype)]) if pad else a

    merged_order = np.concatenate([merged_order, np.arange(n // unit, (n + pad) // unit)]).astype(np.int32)
    out = dict(
        **{k: padded(v) for k, v in rows_of.items()},
        pos_hw=padded(pos_hw),
        frame_layout=SegmentLayout.from_segment_ids(padded(frame_ids, -1), bucket_segments=buckets),
        merged_order=merged_order,
        num_image_tokens=np.int32(num_image_tokens),
    )
    if pv.ndim == 1:  # frame bytes: a length fixed by the padded row count (a row reads at most T patches), so
        # bucketed or multiple-padded rows give static shapes for the bytes too, not one program per byte count
        out["pixel_values"] = np.pad(pv, (0, target * vc.temporal_patch_size * vc.patch_size**2 * vc.in_channels
                                          - len(pv)))
    if config.family == "qwen3_vl":
        out["interp_index"] = padded(extra["interp_index"])
        out["interp_weight"] = padded(extra["interp_weight"])
    else:
        out["window_layout"] = SegmentLayout.from_segment_ids(padded(window_ids, -1), bucket_segments=buckets)
    return VisionInputs(**out)
