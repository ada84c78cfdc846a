"""Batch examples: pad token arrays to the smallest static length bucket; concatenate vision arrays.

Token arrays (B, L): pad id / attention 0 / labels -100 / loss weight 0 / token type 0 / position 0 (the
value transformers' get_rope_index leaves at padding). Left or right padding. Vision arrays stay exact
(rows of all examples concatenated, grids concatenated), unless `patch_buckets` is set: then pixel rows are
zero-padded to the smallest bucket and `num_valid_patches` / `num_valid_video_patches` give the real count;
grids are never padded (a padded grid entry would change the model's output).
"""

from __future__ import annotations

import numpy as np

TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "labels": -100, "loss_weights": 0.0, "mm_token_type_ids": 0,
              "activation_labels": -100}
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def pick_bucket(n: int, buckets) -> int:
    for b in buckets:
        if n <= b:
            return int(b)
    raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}")


def collate(examples: list[dict], *, length_buckets, pad_id: int, padding_side: str = "right",
            patch_buckets=None) -> dict:
    """Examples (unbatched arrays) -> batch dict of numpy arrays (see module docstring)."""
    lens = [len(e["input_ids"]) for e in examples]
    L = pick_bucket(max(lens), length_buckets)
    B = len(examples)
    out = {}
    for key, fill in TOKEN_KEYS.items():
        if key == "attention_mask":
            src = [np.ones(n, np.int32) for n in lens]
        elif key in examples[0]:
            src = [e[key] for e in examples]
        else:
            continue
        fill = pad_id if key == "input_ids" else fill
        dtype = np.float32 if key == "loss_weights" else np.int32
        arr = np.full((B, L), fill, dtype=dtype)
        for i, s in enumerate(src):
            if padding_side == "right":
                arr[i, :len(s)] = s
            else:
                arr[i, L - len(s):] = s
        out[key] = arr
    pos = np.zeros((3, B, L), np.int32)
    for i, e in enumerate(examples):
        n = lens[i]
        sl = slice(0, n) if padding_side == "right" else slice(L - n, L)
        pos[:, i, sl] = e["position_ids"]
    out["position_ids"] = pos
    for key in VISION_KEYS:
        if key in examples[0]:
            out[key] = np.concatenate([e[key] for e in examples])
    if patch_buckets:
        for key, count in (("pixel_values", "num_valid_patches"), ("pixel_values_videos", "num_valid_video_patches")):
            n = len(out[key])
            nb = pick_bucket(n, patch_buckets)
            out[count] = np.int32(n)
            if nb > n:
                out[key] = np.concatenate([out[key], np.zeros((nb - n, *out[key].shape[1:]), out[key].dtype)])
    return out
