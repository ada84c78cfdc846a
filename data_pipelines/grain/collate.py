"""Batch examples: pad token arrays to the smallest static length bucket; concatenate vision arrays.

Token arrays (B, L): pad id / attention 0 / labels -100 / loss weight 0 / token type 0 / position 0 (the
value transformers' get_rope_index leaves at padding). Left or right padding. Vision arrays stay exact
(rows of all examples concatenated, grids concatenated), unless `patch_buckets` is set: then pixel rows are
zero-padded to the smallest bucket and `num_valid_patches` / `num_valid_video_patches` give the real count;
grids are never padded (a padded grid entry would change the model's output).

The batch's shapes are known before any array is written (`batch_spec`), so `collate(..., alloc=...)` can
write every array straight into memory the caller provides (a worker's shared-memory slot, `shm_ring`)
instead of into fresh arrays that would then be copied there.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "labels": -100, "loss_weights": 0.0, "mm_token_type_ids": 0,
              "activation_labels": -100}
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
_PIXEL_COUNTS = {"pixel_values": "num_valid_patches", "pixel_values_videos": "num_valid_video_patches"}

Spec = dict[str, tuple[tuple[int, ...], np.dtype]]


def pick_bucket(n: int, buckets) -> int:
    for b in buckets:
        if n <= b:
            return int(b)
    raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}")


def batch_spec(examples: list[dict], *, length_buckets, patch_buckets=None) -> Spec:
    """{key: (shape, dtype)} of every array `collate` returns for these examples."""
    B, L = len(examples), pick_bucket(max(len(e["input_ids"]) for e in examples), length_buckets)
    spec: Spec = {}
    for key in TOKEN_KEYS:
        if key == "attention_mask" or key in examples[0]:
            spec[key] = ((B, L), np.dtype(np.float32 if key == "loss_weights" else np.int32))
    spec["position_ids"] = ((3, B, L), np.dtype(np.int32))
    for key in VISION_KEYS:
        if key in examples[0]:
            parts = [e[key] for e in examples]
            n = sum(len(p) for p in parts)
            if patch_buckets and key in _PIXEL_COUNTS:
                n = pick_bucket(n, patch_buckets)
            spec[key] = ((n, *parts[0].shape[1:]), np.result_type(*parts))
    return spec


def collate(examples: list[dict], *, length_buckets, pad_id: int, padding_side: str = "right",
            patch_buckets=None, alloc: Callable[[Spec], dict | None] | None = None) -> dict:
    """Examples (unbatched arrays) -> batch dict of numpy arrays (see module docstring). `alloc(spec)` may
    return the arrays to fill (any contents) or None for fresh ones."""
    spec = batch_spec(examples, length_buckets=length_buckets, patch_buckets=patch_buckets)
    out = (alloc(spec) if alloc is not None else None) or {k: np.empty(s, d) for k, (s, d) in spec.items()}
    lens = [len(e["input_ids"]) for e in examples]
    L = spec["position_ids"][0][2]
    rows = [slice(0, n) if padding_side == "right" else slice(L - n, L) for n in lens]
    for key, fill in TOKEN_KEYS.items():
        if key not in spec:
            continue
        arr = out[key]
        arr[...] = pad_id if key == "input_ids" else fill
        for i, sl in enumerate(rows):
            arr[i, sl] = 1 if key == "attention_mask" else examples[i][key]
    pos = out["position_ids"]
    pos[...] = 0
    for i, sl in enumerate(rows):
        pos[:, i, sl] = examples[i]["position_ids"]
    for key in VISION_KEYS:
        if key not in spec:
            continue
        dst, parts = out[key], [e[key] for e in examples]
        n = sum(len(p) for p in parts)
        np.concatenate(parts, out=dst[:n])
        if n < len(dst):  # patch bucket padding
            dst[n:] = 0
        if patch_buckets and key in _PIXEL_COUNTS:
            out[_PIXEL_COUNTS[key]] = np.int32(n)
    return out
