"""Box geometry of the masklet generator (numpy): mask -> box, generalized IoU, Hungarian matching of two
tracking runs, and Strefer's anchor-frame search order.

Boxes are float (x0, y0, x1, y1) in pixels with exclusive right/bottom edges (a one-pixel mask at (x, y) is
(x, y, x + 1, y + 1)); an empty mask has no box (NaN row).
"""

from __future__ import annotations

from collections import deque

import numpy as np


def anchor_search_order(num_frames: int) -> list[int]:
    """Frame indices in Strefer's visiting order: breadth-first over the balanced binary tree of 0..n-1
    (root = the middle (lo + hi) // 2, then the middles of the two halves, ...). n = 7 -> [3, 1, 5, 0, 2, 4, 6]."""
    order: list[int] = []
    queue = deque([(0, num_frames - 1)])
    while queue:
        lo, hi = queue.popleft()
        if lo > hi:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        queue.append((lo, mid - 1))
        queue.append((mid + 1, hi))
    return order


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float64 xyxy (exclusive max); NaN rows for empty masks."""
    masks = np.asarray(masks, dtype=bool)
    out = np.full((masks.shape[0], 4), np.nan)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if rows.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) -> (N, M) IoU; 0 where a box is missing (NaN) or both have zero area."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    lt, rb = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = _area(a) + _area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def generalized_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) -> (N, M) GIoU = IoU - (|C| - |A u B|) / |C|, C the smallest enclosing box; -1 (the worst
    value) where either box is missing, so an empty mask is matched last."""
    a64, b64 = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    lt, rb = np.maximum(a64[..., :2], b64[..., :2]), np.minimum(a64[..., 2:], b64[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = _area(a64) + _area(b64) - inter
    hull = _area(np.concatenate([np.minimum(a64[..., :2], b64[..., :2]), np.maximum(a64[..., 2:], b64[..., 2:])],
                                axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        giou = np.where(hull > 0, iou - (hull - union) / hull, iou)
    missing = np.isnan(a64).any(-1) | np.isnan(b64).any(-1)
    return np.where(missing, -1.0, giou)


def hungarian_match(boxes_a: np.ndarray, boxes_b: np.ndarray) -> dict[int, int]:
    """One-to-one assignment a -> b maximising the summed GIoU (`linear_sum_assignment` on -GIoU, as Strefer
    matches its backward to its forward run). With N != M only min(N, M) pairs are returned. Ties (e.g. empty
    masks on both sides, all at GIoU -1) go to the same index: a 1e-9 bonus on the diagonal."""
    from scipy.optimize import linear_sum_assignment

    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return {}
    cost = -generalized_box_iou(boxes_a, boxes_b)
    cost -= 1e-9 * np.eye(*cost.shape)
    rows, cols = linear_sum_assignment(cost)
    return {int(r): int(c) for r, c in zip(rows, cols)}
