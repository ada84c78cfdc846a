"""What the masklet generator returns for one clip: per-entity masklets and the counted failures."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

# Failure reasons (stable keys for Beam counters and the dead-letter output)
NO_DETECTIONS = "no_detections"  # no frame had a detection: the clip has no masklets
FEWER_DETECTIONS = "fewer_detections_than_expressions"  # the anchor frame has fewer boxes than expressions
LOST_AT_ANCHOR = "empty_mask_at_anchor"  # SAM2 gave an entity no mask on its own prompted frame
DIRECTION_SWAP = "forward_backward_ids_swapped"  # the Hungarian match of the two runs was not the identity
MATCH_CONFLICT = "matching_conflict"  # two expressions claimed the same single masklet
EXPRESSION_UNMATCHED = "expression_unmatched"  # no masklet was found for an expression
MASKLET_UNREFERRED = "masklet_unreferred"  # a tracked masklet that no expression names


@dataclass
class Failure:
    reason: str
    detail: str = ""


@dataclass
class EntityMasklet:
    """One tracked entity over the clip's T frames.

    masks: [T] COCO RLE ({"size", "counts": str}) where the entity is present, None where absent (SAM2's
    object score <= 0 or an empty mask); object_scores: [T] SAM2 object-score logits; anchor_box: the prompt
    box (xyxy) on the anchor frame; label/detector_score: the detector's phrase and score; expression_index:
    the expression naming it (stage 4), None when none does."""

    track_id: int
    label: str
    detector_score: float
    anchor_box: list[float]
    masks: list[dict | None]
    object_scores: list[float]
    expression_index: int | None = None

    @property
    def present(self) -> list[bool]:
        return [m is not None for m in self.masks]

    @property
    def first_frame(self) -> int | None:
        p = self.present
        return p.index(True) if any(p) else None

    @property
    def reentries(self) -> int:
        """Times the entity comes back into view after being absent (visible runs after the first)."""
        return max(len(self.visible_runs()) - 1, 0)

    def visible_runs(self) -> list[tuple[int, int]]:
        """[(first, last)] inclusive frame runs where the entity is present."""
        p = np.asarray(self.present, np.int8)
        d = np.diff(np.concatenate([[0], p, [0]]))
        return [(int(a), int(b) - 1) for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))]


@dataclass
class MaskletResult:
    num_frames: int
    height: int
    width: int
    anchor_frame: int | None
    frames_searched: list[int]  # the anchor search's visited frames, in order
    entities: list[EntityMasklet] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def fail(self, reason: str, detail: str = "") -> None:
        self.failures.append(Failure(reason, detail))

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(f.reason for f in self.failures))

    def by_expression(self) -> dict[int, EntityMasklet]:
        return {e.expression_index: e for e in self.entities if e.expression_index is not None}

    def mask_array(self, entity: EntityMasklet) -> np.ndarray:
        """(T, H, W) bool masks of one entity (zeros where absent)."""
        from data_pipelines.strefer.masklets.coco_rle import decode

        out = np.zeros((self.num_frames, self.height, self.width), bool)
        for k, m in enumerate(entity.masks):
            if m is not None:
                out[k] = decode(m)
        return out

    def to_dict(self) -> dict:
        """JSON-serializable (RLE counts are strings)."""
        d = asdict(self)
        d["counts"] = self.counts
        return d
