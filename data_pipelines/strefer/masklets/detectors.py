"""Text-conditioned box detectors of the masklet generator (PyTorch, imported lazily).

Every detector maps one RGB frame (H, W, 3) uint8 and a list of phrases to `Detections`:
- `GroundingDinoDetector`: transformers `GroundingDinoForObjectDetection` + its processor (the PIL image
  processor; no torchvision), prompt "noun1.noun2. " lower-cased with "person" first, Strefer's thresholds.
- `Owlv2Detector`: transformers `Owlv2ForObjectDetection`, one text query per phrase.
- `OracleDetector`: the caller's ground-truth boxes (`boxes_fn(t)`), each edge jittered by a seeded normal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from data_pipelines.strefer.masklets.config import DetectorConfig
from stvl_jax.errors import CheckpointError

# boxes_fn(t) -> [(xyxy box of an entity visible at frame t, the index of the expression naming it or None)]
BoxesFn = Callable[[int], Sequence[tuple[Sequence[float], int | None]]]


@dataclass
class Detections:
    """N boxes of one frame: boxes (N, 4) float32 xyxy pixels, scores (N,), labels [N] (the detector's phrase),
    expression_index [N] (known only to the oracle, else None)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: list[str] = field(default_factory=list)
    expression_index: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)


def grounding_dino_prompt(nouns: Sequence[str]) -> str:
    """Strefer's text prompt: unique lower-cased nouns joined by '.', 'person' first, ending with '. '."""
    unique = sorted({n.strip().lower() for n in nouns if n.strip()})  # sorted: deterministic across runs
    if "person" in unique:
        unique = ["person"] + [n for n in unique if n != "person"]
    return ".".join(unique) + ". "


class _HfDetector:
    """A transformers detector and its processor from the HF directory cfg.path; `forward(**inputs)` no-grad."""

    model_class = ""

    def __init__(self, cfg: DetectorConfig):
        import os

        import transformers

        if not os.path.isfile(os.path.join(cfg.path, "config.json")):
            raise CheckpointError(f"detector directory {cfg.path!r} has no config.json (expected an HF "
                                  f"{self.model_class} directory with its processor files)")
        self.cfg = cfg
        self.processor = transformers.AutoProcessor.from_pretrained(cfg.path)
        self.model = getattr(transformers, self.model_class).from_pretrained(cfg.path).eval()

    def forward(self, **inputs):
        import torch

        with torch.no_grad():
            return self.model(**inputs)


class GroundingDinoDetector(_HfDetector):
    model_class = "GroundingDinoForObjectDetection"

    def detect(self, image: np.ndarray, phrases: Sequence[str], frame_index: int = 0) -> Detections:
        from PIL import Image

        h, w = image.shape[:2]
        inputs = self.processor(images=Image.fromarray(image), text=grounding_dino_prompt(phrases),
                                return_tensors="pt")
        out = self.forward(**inputs)
        res = self.processor.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=self.cfg.box_threshold, text_threshold=self.cfg.text_threshold,
            target_sizes=[(h, w)])[0]
        return _keep(res["boxes"].numpy(), res["scores"].numpy(), list(res["text_labels"]), self.cfg.min_score)


class Owlv2Detector(_HfDetector):
    model_class = "Owlv2ForObjectDetection"

    def detect(self, image: np.ndarray, phrases: Sequence[str], frame_index: int = 0) -> Detections:
        from PIL import Image

        h, w = image.shape[:2]
        queries = list(dict.fromkeys(p.strip().lower() for p in phrases))
        inputs = self.processor(text=[queries], images=Image.fromarray(image), return_tensors="pt")
        out = self.forward(**inputs)
        # (h, w): the post-processing itself scales by max(h, w), the side of OWLv2's square-padded input
        res = self.processor.post_process_grounded_object_detection(
            out, threshold=self.cfg.owlv2_threshold, target_sizes=[(h, w)])[0]
        boxes = res["boxes"].numpy().copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        labels = [queries[int(i)] for i in res["labels"]]
        return _keep(boxes, res["scores"].numpy(), labels, self.cfg.min_score)


def _keep(boxes, scores, labels, min_score: float) -> Detections:
    """Strefer's post-processing: drop detections with an empty label or a score under min_score."""
    keep = [i for i, (s, lab) in enumerate(zip(scores, labels)) if lab.strip() and s >= min_score]
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4)[keep], np.asarray(scores, np.float32)[keep],
                      [labels[i] for i in keep], [None] * len(keep))


class OracleDetector:
    """Ground-truth boxes from `boxes_fn`, each coordinate moved by N(0, jitter * box side), clipped to the frame;
    score 1. Deterministic: the noise of frame t depends only on (seed, t)."""

    def __init__(self, cfg: DetectorConfig, boxes_fn: BoxesFn | None = None):
        self.cfg = cfg
        self.boxes_fn = boxes_fn

    def bind(self, boxes_fn: BoxesFn) -> OracleDetector:
        """This detector on one clip's ground truth (a new object: one generator may serve several threads)."""
        return OracleDetector(self.cfg, boxes_fn)

    def detect(self, image: np.ndarray, phrases: Sequence[str], frame_index: int = 0) -> Detections:
        if self.boxes_fn is None:
            raise ValueError("the oracle detector needs boxes_fn (ground-truth boxes per frame) in generate()")
        h, w = image.shape[:2]
        items = list(self.boxes_fn(frame_index))
        if not items:
            return Detections()
        boxes = np.asarray([b for b, _ in items], np.float64).reshape(-1, 4)
        rng = np.random.default_rng([self.cfg.seed, frame_index])
        side = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        boxes = boxes + rng.normal(size=boxes.shape) * self.cfg.oracle_jitter * side
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        idx = [e for _, e in items]
        labels = [phrases[e] if e is not None and e < len(phrases) else "object" for e in idx]
        return Detections(boxes.astype(np.float32), np.ones(len(items), np.float32), labels, idx)


def build_detector(cfg: DetectorConfig):
    return {"grounding_dino": GroundingDinoDetector, "owlv2": Owlv2Detector, "oracle": OracleDetector}[cfg.kind](cfg)
