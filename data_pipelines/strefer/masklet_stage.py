"""Stages 3/4 seen from the pipeline: a clip's sampled frames + its entities -> one masklet per entity.

Two sources (`EngineConfig.masklets`):
  ground_truth  the synthetic set's instance masks at the sampled frames (no model; tests and demos)
  generator     the PyTorch referring masklet generator (`data_pipelines.strefer.masklets`, torch + sam2
                extras), built in `setup` from `EngineConfig.generator` (its `MaskletConfig` as a dict)
Result: {"frame_indices": [source frame per sampled frame], "frame_times": [s from the clip start],
         "height", "width", "entities": {entity id: [COCO RLE or None per frame]},
         "anchor_frame": int | None, "scores": {id: [object score per frame]} | None}
plus a Counter of per-entity failures (entities without a masklet are dropped from the clip by the caller).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from data_pipelines.strefer.config import EngineConfig


def sample_frame_indices(clip: dict, num_frames: int) -> np.ndarray:
    """Strefer's uniform sampling: np.linspace over the clip's first..last frame, rounded (repeats when the clip
    has fewer frames than `num_frames`)."""
    return np.linspace(clip["start_frame"], clip["end_frame"] - 1, num_frames).round().astype(np.int64)


class GroundTruthMasklets:
    def setup(self) -> None:
        from data_pipelines.strefer.synthetic_truth import TruthReader

        self.truth = TruthReader()

    def __call__(self, clip: dict, frames: np.ndarray, frame_indices, meta: dict) -> tuple[dict, Counter]:
        ids = [e["id"] for e in meta["entities"]]
        ent = self.truth.masklets(clip, frame_indices, ids)
        return {"entities": ent, "anchor_frame": None, "scores": None}, Counter()


class GeneratorMasklets:
    """Adapter over `MaskletGenerator(config).setup()` / `.generate(frames, expressions, nouns=, boxes_fn=)`.

    With the synthetic annotator, the ground-truth boxes of the sampled frames are handed over as `boxes_fn`
    (what the generator's oracle detector and synthetic matcher read); a model annotator passes none."""

    def __init__(self, generator_config: dict, ground_truth_boxes: bool):
        self.generator_config, self.ground_truth_boxes = generator_config, ground_truth_boxes

    def setup(self) -> None:
        from data_pipelines.strefer.masklets import MaskletConfig, MaskletGenerator

        self.gen = MaskletGenerator(MaskletConfig.from_dict(self.generator_config)).setup()
        if self.ground_truth_boxes:
            from data_pipelines.strefer.synthetic_truth import TruthReader

            self.truth = TruthReader()

    def _boxes_fn(self, clip: dict, frame_indices, ids: list[int]):
        from data_pipelines.strefer.masklets.synthetic import gt_boxes_fn

        ann, first = self.truth.shot(clip)
        local = [int(f) - clip["start_frame"] + first for f in frame_indices]  # frames of the shot's annotation
        return gt_boxes_fn(ann, local, ids)

    def __call__(self, clip: dict, frames: np.ndarray, frame_indices, meta: dict) -> tuple[dict, Counter]:
        ents = meta["entities"]
        boxes_fn = self._boxes_fn(clip, frame_indices, [e["id"] for e in ents]) if self.ground_truth_boxes else None
        res = self.gen.generate(frames, [e["expression"] for e in ents], nouns=[e["general_noun"] for e in ents],
                                boxes_fn=boxes_fn)
        masks, scores = {}, {}
        for i, m in res.by_expression().items():
            masks[ents[i]["id"]] = list(m.masks)
            scores[ents[i]["id"]] = list(m.object_scores)
        fails = Counter({f"masklet_{k}": v for k, v in res.counts.items()})
        return {"entities": masks, "anchor_frame": res.anchor_frame, "scores": scores}, fails


def make_masklet_source(cfg: EngineConfig):
    if cfg.masklets == "ground_truth":
        return GroundTruthMasklets()
    return GeneratorMasklets(dict(cfg.generator), ground_truth_boxes=cfg.annotator.name == "synthetic")
