"""Binary mask run-length encoding, COCO-compatible *uncompressed* RLE.

`{"size": [H, W], "counts": [n0, n1, ...]}`: runs over the mask flattened in column-major (Fortran) order,
starting with a run of zeros (possibly 0). pycocotools' `frPyObjects` reads this format directly.
"""

from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> dict:
    """(H, W) bool/0-1 array -> {"size": [H, W], "counts": [int, ...]}."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2D mask, got shape {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    # Positions where the value changes, plus both ends; the first run counts zeros.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of `rle_encode` -> (H, W) bool array. Raises ValueError on inconsistent counts."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w} for size {[h, w]}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T


def rle_area(rle: dict) -> int:
    """Number of foreground pixels."""
    return int(sum(rle["counts"][1::2]))
