"""The embedded synthetic set as masklet-generator input: one expression per entity, ground-truth boxes for the
oracle detector and the synthetic matcher, ground-truth masks for scoring (numpy; no torch)."""

from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines.rle import rle_decode


def frame_indices(gt: dict, n_frames: int = 32) -> list[int]:
    """Strefer's sampling: n frames uniformly over the clip (as the synthetic set's own masklets file)."""
    n = gt["num_frames"]
    return np.linspace(0, n - 1, min(n_frames, n)).round().astype(int).tolist()


def entity_expressions(gt: dict) -> tuple[list[str], list[str], list[int]]:
    """-> (expressions, generalized nouns, entity ids): per entity its first expression ("the <colour> <shape>"),
    the noun its category."""
    first: dict[int, str] = {}
    for r in gt["referring_expressions"]:
        first.setdefault(r["entity"], r["expression"])
    ents = [e for e in gt["entities"] if e["id"] in first]
    return [first[e["id"]] for e in ents], [e["category"] for e in ents], [e["id"] for e in ents]


def _xyxy(box_xywh) -> list[float]:
    x, y, w, h = box_xywh
    return [float(x), float(y), float(x + w), float(y + h)]


def gt_boxes_fn(gt: dict, indices: list[int], entity_ids: list[int]):
    """boxes_fn(t) -> [(xyxy, expression index)] of the entities visible at sampled frame t."""
    pos = {eid: i for i, eid in enumerate(entity_ids)}

    def boxes_fn(t: int):
        objs = gt["frames"][indices[t]]["objects"]
        return [(_xyxy(o["box"]), pos[o["entity"]]) for o in objs if o["entity"] in pos]

    return boxes_fn


def gt_masks(gt: dict, indices: list[int], entity_id: int) -> np.ndarray:
    """(T, H, W) bool ground-truth masklet of one entity on the sampled frames."""
    out = np.zeros((len(indices), gt["height"], gt["width"]), bool)
    for t, k in enumerate(indices):
        for o in gt["frames"][k]["objects"]:
            if o["entity"] == entity_id:
                out[t] = rle_decode(o["rle"])
    return out


def load_clip(synth_dir: str, vid: str, n_frames: int = 32) -> tuple[np.ndarray, dict, list[int]]:
    """-> (decoded frames (T, H, W, 3) uint8 at the sampled indices, ground truth, indices)."""
    from data_pipelines.video import decode_frames

    with open(os.path.join(synth_dir, "annotations", vid + ".json")) as f:
        gt = json.load(f)
    idx = frame_indices(gt, n_frames)
    return decode_frames(os.path.join(synth_dir, "videos", vid + ".mp4"), idx), gt, idx
