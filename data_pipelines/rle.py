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


def coco_counts_decode(s: str | bytes) -> list[int]:
    """COCO's compressed RLE counts string (pycocotools `rleFrString`) -> run lengths.

    Each count is written in 5-bit groups, least significant first, as characters 48 + group (bit 0x20: another
    group follows; bit 0x10 of the last group: negative); from the third count on, a count is stored as the
    difference to the count two places before it."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("COCO RLE counts string ends inside a count")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"COCO RLE counts string has a byte {data[p]!r} outside '0'..'o'")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def coco_counts_encode(counts) -> str:
    """Run lengths -> COCO's compressed counts string (pycocotools `rleToString`), the inverse of the above."""
    out = bytearray()
    counts = [int(c) for c in counts]
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            g = x & 0x1F
            x >>= 5  # arithmetic shift: a negative difference ends at -1
            more = x != -1 if g & 0x10 else x != 0
            out.append(48 + (g | 0x20 if more else g))
    return out.decode("ascii")


def coco_rle_decode(rle) -> np.ndarray:
    """A COCO RLE, compressed ({"size", "counts": str}) or not ({"size", "counts": [int]}) -> (H, W) bool.
    Raises ValueError (with the reason) on a malformed one."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("a COCO RLE is an object with 'size' and 'counts'")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = coco_counts_decode(counts)
    elif not isinstance(counts, list):
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    return rle_decode({"size": rle["size"], "counts": counts})


def coco_rle_encode(mask: np.ndarray) -> dict:
    """(H, W) mask -> COCO's compressed RLE {"size": [H, W], "counts": str} (what `mask_dict.json` files hold)."""
    rle = rle_encode(mask)
    return {"size": rle["size"], "counts": coco_counts_encode(rle["counts"])}
