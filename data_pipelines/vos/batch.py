"""Fixed-shape numpy arrays of a clip and its prompts (static shapes for a jitted SAM2 step), and batching.

Per clip, O = `max_objects` object slots (padding slots have `object_valid` False), T frames, P point slots:
    frame_indices (T,) int64           frames (T, H, W, 3) uint8 when the clip was decoded
    masks (O, T, H, W) bool            object_valid (O,) bool         entity_ids (O,) int64, -1 = padding
    first_visible (O,) int64, -1 = padding
    cond (O, T) bool                   a prompt on this frame (SAM2's conditioning frames)
    point_coords (O, T, P, 2) float32  (x, y) pixels; point_labels (O, T, P) int32: 1 positive, 0 negative,
                                       2 / 3 box corners, -1 padding (SAM2's "not a point")
    mask_inputs (O, T, H, W) bool      has_mask_input (O, T) bool
    case (O,) int32                    index into CASE_NAMES (-1 = padding)
"""

from __future__ import annotations

import numpy as np

from data_pipelines.vos.clips import CASES, VosClip
from data_pipelines.vos.prompts import Prompt

CASE_NAMES = (*CASES, "plain")
PAD_LABEL = -1


def clip_arrays(clip: VosClip, prompts: list[Prompt], max_objects: int | None = None,
                max_points: int = 2) -> dict[str, np.ndarray]:
    """One clip + its prompts -> the dict of arrays above. Raises ValueError when they do not fit the slots."""
    o_max = clip.num_objects if max_objects is None else max_objects
    if clip.num_objects > o_max:
        raise ValueError(f"{clip.vid}: {clip.num_objects} objects do not fit max_objects={o_max}")
    n, t, h, w = clip.masks.shape
    out = {
        "frame_indices": clip.frame_indices.astype(np.int64),
        "masks": np.zeros((o_max, t, h, w), bool),
        "object_valid": np.arange(o_max) < n,
        "entity_ids": np.full(o_max, -1, np.int64),
        "first_visible": np.full(o_max, -1, np.int64),
        "cond": np.zeros((o_max, t), bool),
        "point_coords": np.zeros((o_max, t, max_points, 2), np.float32),
        "point_labels": np.full((o_max, t, max_points), PAD_LABEL, np.int32),
        "mask_inputs": np.zeros((o_max, t, h, w), bool),
        "has_mask_input": np.zeros((o_max, t), bool),
        "case": np.full(o_max, -1, np.int32),
    }
    out["masks"][:n] = clip.masks
    out["entity_ids"][:n] = clip.entity_ids
    out["first_visible"][:n] = clip.first_visible
    out["case"][:n] = [CASE_NAMES.index(c) for c in clip.case]
    for p in prompts:
        if not 0 <= p.object < n or not 0 <= p.frame < t:
            raise ValueError(f"{clip.vid}: prompt for object {p.object} on frame {p.frame} is outside the clip "
                             f"({n} objects, {t} frames)")
        out["cond"][p.object, p.frame] = True
        if p.kind == "mask":
            out["mask_inputs"][p.object, p.frame] = p.mask
            out["has_mask_input"][p.object, p.frame] = True
            continue
        k = len(p.labels)
        if k > max_points:
            raise ValueError(f"{clip.vid}: a {p.kind} prompt of {k} points does not fit max_points={max_points}")
        out["point_coords"][p.object, p.frame, :k] = p.points
        out["point_labels"][p.object, p.frame, :k] = p.labels
    if clip.frames is not None:
        out["frames"] = clip.frames
    return out


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-clip arrays along a new leading batch axis (every clip must have the same shapes)."""
    keys = samples[0].keys()
    for s in samples[1:]:
        if s.keys() != keys:
            raise ValueError(f"collate: clips carry different arrays ({sorted(keys)} vs {sorted(s.keys())})")
        for k in keys:
            if s[k].shape != samples[0][k].shape:
                raise ValueError(f"collate: {k!r} has shapes {samples[0][k].shape} and {s[k].shape}; give the "
                                 "reader one clip length and clip_arrays one max_objects")
    return {k: np.stack([s[k] for s in samples]) for k in keys}
