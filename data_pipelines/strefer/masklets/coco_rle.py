"""COCO RLE of masklet frames through pycocotools: compressed counts as a UTF-8 string (JSON-safe)."""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": str} (pycocotools' compressed RLE)."""
    from pycocotools import mask as mask_util

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"COCO RLE encodes one (H, W) mask, got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """A compressed ({"counts": str | bytes}) or uncompressed ({"counts": [int]}, as the synthetic set's ground
    truth) COCO RLE -> (H, W) bool."""
    from pycocotools import mask as mask_util

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_util.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_util.decode(compressed).astype(bool)


def area(rle: dict) -> int:
    from pycocotools import mask as mask_util

    return int(mask_util.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))
