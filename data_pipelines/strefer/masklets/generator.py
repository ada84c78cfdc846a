"""Strefer's referring masklet generator (stage 3 + 4 of the data engine), PyTorch side.

    gen = MaskletGenerator(MaskletConfig.from_dict({...})).setup()   # once per worker (Beam DoFn.setup)
    result = gen.generate(frames, expressions, nouns=..., boxes_fn=...)

1. Anchor frame: the detector visits the frames in Strefer's order (middle, quartiles, ...: `anchor_search_order`)
   and stops at the first frame with at least as many detections as expressions; else the frame with the most
   (the first such frame in visiting order).
2. SAM2 tracks the anchor's boxes forward (anchor..end) and backward (anchor..start, reversed frames) as two
   videos; the runs' object ids are matched by Hungarian assignment on the GIoU of their mask boxes at the anchor;
   frames before the anchor come from the backward run, the anchor and later frames from the forward run.
3. Per frame a COCO RLE where SAM2's object score says present (> 0) and the mask is not empty, else None:
   late entries, exits and re-entries are what the object score reports.
4. Each expression is matched to one masklet within its generalized-noun group (`matching.noun_groups`, as
   Strefer partitions its matching): the detector's one prompt holds every noun, each masklet carries the noun
   its box was detected for, and an expression only names a masklet of its own noun. Conflicts and failures are
   counted in the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipelines.strefer.masklets import coco_rle, matching
from data_pipelines.strefer.masklets import result as R
from data_pipelines.strefer.masklets.boxes import anchor_search_order, hungarian_match, masks_to_boxes
from data_pipelines.strefer.masklets.config import MaskletConfig
from data_pipelines.strefer.masklets.detectors import BoxesFn, Detections
from stvl_jax.errors import ConfigError, InputError


class MaskletInputError(InputError):
    """The frames or expressions handed to `generate` are malformed."""


def _check_inputs(frames, expressions, nouns) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        raise MaskletInputError(f"masklet frames must be a (T, H, W, 3) uint8 array, got {shape} "
                                f"{getattr(frames, 'dtype', type(frames).__name__)}")
    if frames.shape[0] == 0:
        raise MaskletInputError("masklet frames: the clip has no frames")
    if not expressions or not all(isinstance(e, str) and e.strip() for e in expressions):
        raise MaskletInputError(f"masklet expressions must be a non-empty list of non-empty strings, got "
                                f"{expressions!r}")
    if nouns is not None and len(nouns) != len(expressions):
        raise MaskletInputError(f"masklet nouns: {len(nouns)} given for {len(expressions)} expressions "
                                "(one generalized noun per expression)")


class MaskletGenerator:
    """Loads its models in `setup` (not in __init__: the instance is pickled to Beam workers)."""

    def __init__(self, config: MaskletConfig | dict | None = None, *, box_picker: matching.BoxPicker | None = None):
        self.config = config if isinstance(config, MaskletConfig) else MaskletConfig.from_dict(config or {})
        self.box_picker = box_picker
        self.detector = None
        self.tracker = None
        if self.config.matching.kind == "vlm" and box_picker is None:
            raise ConfigError("masklets matching.kind='vlm' needs MaskletGenerator(..., box_picker=fn)")

    def setup(self) -> MaskletGenerator:
        from data_pipelines.strefer.masklets.detectors import build_detector
        from data_pipelines.strefer.masklets.trackers import build_tracker

        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        if self.detector is None:
            self.detector = build_detector(self.config.detector)
        if self.tracker is None:
            self.tracker = build_tracker(self.config.tracker)
        return self

    # ------------------------------------------------------------------------------------------ stage 3
    def find_anchor(self, frames: np.ndarray, phrases: Sequence[str], need: int, detector=None
                    ) -> tuple[int, Detections, list[int]]:
        """-> (anchor frame, its detections, frames visited)."""
        detector = detector or self.detector
        best, best_det, visited = None, None, []
        for k in anchor_search_order(len(frames)):
            det = detector.detect(frames[k], phrases, k)
            visited.append(k)
            if best_det is None or len(det) > len(best_det):
                best, best_det = k, det
            if len(det) >= need:
                return k, det, visited
        return best, best_det, visited

    def generate(self, frames: np.ndarray, expressions: Sequence[str], *, nouns: Sequence[str] | None = None,
                 boxes_fn: BoxesFn | None = None) -> R.MaskletResult:
        """frames (T, H, W, 3) uint8, expressions [E] (one per entity), nouns [E] (generalized nouns: the
        detector's prompt and the matching groups; default the expressions, i.e. one group per expression),
        boxes_fn(t) -> [(xyxy, expression index)] ground-truth boxes of frame t (the oracle detector and the
        synthetic matcher) -> `MaskletResult`."""
        if self.tracker is None:
            raise RuntimeError("MaskletGenerator.setup() must run before generate()")
        _check_inputs(frames, expressions, nouns)
        expressions = list(expressions)
        phrases = list(nouns) if nouns is not None else expressions
        if self.config.detector.kind == "oracle" or self.config.matching.kind == "synthetic":
            if boxes_fn is None:
                raise MaskletInputError("masklets: the oracle detector and the synthetic matcher need boxes_fn "
                                        "(ground-truth boxes per frame)")
        detector = self.detector.bind(boxes_fn) if self.config.detector.kind == "oracle" else self.detector
        t, h, w = frames.shape[:3]
        anchor, det, visited = self.find_anchor(frames, phrases, len(expressions), detector)
        res = R.MaskletResult(t, h, w, anchor if len(det) else None, visited)
        if not len(det):
            res.fail(R.NO_DETECTIONS, f"no detection on any of {t} frames for {phrases}")
            return res
        if len(det) < len(expressions):
            res.fail(R.FEWER_DETECTIONS, f"{len(det)} boxes for {len(expressions)} expressions at frame {anchor}")
        masks, scores = self._track_both_ways(frames, anchor, det.boxes, res)
        for i in range(len(det)):
            present = (scores[:, i] > 0) & masks[:, i].any(axis=(1, 2))
            if not present[anchor]:
                res.fail(R.LOST_AT_ANCHOR, f"entity {i + 1} ({det.labels[i]!r}) has no mask at its prompt frame")
            res.entities.append(R.EntityMasklet(
                track_id=i + 1, label=det.labels[i], detector_score=float(det.scores[i]),
                anchor_box=[round(float(v), 2) for v in det.boxes[i]],
                masks=[coco_rle.encode(masks[k, i]) if present[k] else None for k in range(t)],
                object_scores=[round(float(s), 4) for s in scores[:, i]]))
        self._match(frames[anchor], anchor, det, expressions, phrases, boxes_fn, detector, res)
        return res

    def _track_both_ways(self, frames, anchor: int, boxes, res) -> tuple[np.ndarray, np.ndarray]:
        """-> merged masks (T, N, H, W) and object scores (T, N) indexed by prompt order."""
        fwd = self.tracker.track(frames[anchor:], boxes)
        bwd = self.tracker.track(frames[anchor::-1], boxes)
        n = len(boxes)
        match = hungarian_match(masks_to_boxes(bwd.masks[0]), masks_to_boxes(fwd.masks[0]))
        if any(match.get(i, i) != i for i in range(n)):
            res.fail(R.DIRECTION_SWAP, f"backward -> forward ids at frame {anchor}: {match}")
        cols = [match.get(i, i) for i in range(n)]
        masks = np.concatenate([bwd.masks[:0:-1], fwd.masks[:, cols]], axis=0)
        scores = np.concatenate([bwd.scores[:0:-1], fwd.scores[:, cols]], axis=0)
        return masks, scores

    # ------------------------------------------------------------------------------------------ stage 4
    def _match(self, image, anchor: int, det: Detections, expressions: list[str], nouns: list[str], boxes_fn,
               detector, res) -> None:
        """Each noun group on its own (`matching.noun_groups`); candidates are indices into the group's
        masklets, mapped back to the clip's masklets here."""
        if self.config.matching.kind == "none":
            return
        for g in matching.noun_groups(nouns, det.labels):
            if not g.masklets:
                for e in g.expressions:
                    res.fail(R.EXPRESSION_UNMATCHED, f"expression {e} ({expressions[e]!r}): no masklet of its "
                                                     f"noun {g.noun!r} at frame {anchor}")
                continue
            cands = self._group_candidates(g, image, anchor, det, expressions, boxes_fn, detector)
            assigned, conflicts, unmatched = matching.assign_one_to_one(cands)
            for e, m in assigned.items():
                res.entities[g.masklets[m]].expression_index = g.expressions[e]
            for e in conflicts:
                res.fail(R.MATCH_CONFLICT, f"expression {g.expressions[e]} ({expressions[g.expressions[e]]!r}) "
                                           f"claims masklet {g.masklets[cands[e][0]] + 1}, as another expression "
                                           "does")
            for e in unmatched:
                res.fail(R.EXPRESSION_UNMATCHED, f"expression {g.expressions[e]} "
                                                 f"({expressions[g.expressions[e]]!r}): no masklet found among "
                                                 f"the {len(g.masklets)} of noun {g.noun!r}")
        for ent in res.entities:
            if ent.expression_index is None:
                res.fail(R.MASKLET_UNREFERRED, f"masklet {ent.track_id} ({ent.label!r}) is named by no expression")

    def _group_candidates(self, g: matching.NounGroup, image, anchor: int, det: Detections,
                          expressions: list[str], boxes_fn, detector) -> list[list[int]]:
        """Candidate masklets per expression of group `g`, as indices into `g.masklets`."""
        kind, min_iou = self.config.matching.kind, self.config.matching.min_iou
        if len(g.expressions) == 1 and len(g.masklets) == 1:  # Strefer: nothing to choose
            return [[0]]
        boxes = det.boxes[list(g.masklets)]
        texts = [expressions[e] for e in g.expressions]
        if kind == "synthetic":
            local = {e: i for i, e in enumerate(g.expressions)}
            gt = [(box, local[e]) for box, e in boxes_fn(anchor) if e in local]
            return matching.synthetic_candidates(gt, boxes, len(texts), min_iou)
        if kind == "grounding":
            return matching.grounding_candidates(detector, image, anchor, texts, boxes, min_iou,
                                                 expression_ids=g.expressions)
        # vlm: the picker sees only this group's boxes (Strefer hands RexSeek one partition's boxes)
        return matching.vlm_candidates(self.box_picker, image, texts, boxes)
