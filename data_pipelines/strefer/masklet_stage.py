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
    """Adapter over `MaskletGenerator(config).setup()` / `.generate(frames, expressions) -> MaskletResult`."""

    def __init__(self, generator_config: dict):
        self.generator_config = generator_config

    def setup(self) -> None:
        from data_pipelines.strefer.masklets import MaskletConfig, MaskletGenerator

        self.gen = MaskletGenerator(MaskletConfig.from_dict(self.generator_config))
        self.gen.setup()

    def __call__(self, clip: dict, frames: np.ndarray, frame_indices, meta: dict) -> tuple[dict, Counter]:
        exprs = [e["expression"] for e in meta["entities"]]
        res = self.gen.generate(frames, exprs)
        ent, scores = {}, {}
        # The result lists tracked objects with the expression each was matched to (or None).
        for obj, expr_index in enumerate(res.matched):
            if expr_index is None:
                continue
            eid = meta["entities"][expr_index]["id"]
            ent[eid] = list(res.masklets[obj])
            scores[eid] = [float(s) for s in res.scores[obj]]
        fails = Counter({f"masklet_{k}": int(v) for k, v in dict(res.failures).items()})
        return {"entities": ent, "anchor_frame": int(res.anchor_frame), "scores": scores}, fails


def make_masklet_source(cfg: EngineConfig):
    return GroundTruthMasklets() if cfg.masklets == "ground_truth" else GeneratorMasklets(dict(cfg.generator))
