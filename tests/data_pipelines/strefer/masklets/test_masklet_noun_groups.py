"""Strefer's generalized-noun groups in the generator, hand-worked: the detector's one prompt and the anchor search
count every noun together; matching runs per group, over that group's masklets only (the oracle detector labels
each box with its expression's noun, a stub detector gives hand-chosen labels)."""

import numpy as np
import pytest

pytest.importorskip("pycocotools")
pytest.importorskip("scipy")

from data_pipelines.strefer.masklets import MaskletGenerator  # noqa: E402
from data_pipelines.strefer.masklets import result as R  # noqa: E402
from data_pipelines.strefer.masklets.detectors import Detections  # noqa: E402
from data_pipelines.strefer.masklets.matching import parse_object_indices  # noqa: E402
from data_pipelines.strefer.masklets.trackers import TrackOutput  # noqa: E402

T, H, W = 5, 32, 32  # Strefer's visiting order for 5 frames: 2, 0, 3, 1, 4
# Three squares and a circle, still; expressions 0 and 1 are squares (noun "square"), 2 the circle
A, B, C, D = [0, 0, 8, 8], [10, 0, 18, 8], [20, 20, 28, 28], [0, 20, 8, 28]
EXPRESSIONS = ["the red square", "the blue square", "the green circle"]
NOUNS = ["square", "Square", "circle"]  # nouns compare case-blind


class StillTracker:
    """Each prompted box filled, on every frame, judged present (object score 1)."""

    def track(self, frames, boxes):
        t = len(frames)
        masks = np.zeros((t, len(boxes), H, W), bool)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).round().astype(int)):
            masks[:, i, y0:y1, x0:x1] = True
        return TrackOutput(masks, np.ones((t, len(boxes)), np.float32))


class StubDetector:
    """frame index -> [(box, label)]; records the frames and the phrases it was asked."""

    def __init__(self, per_frame):
        self.per_frame, self.asked = per_frame, []

    def bind(self, boxes_fn):
        return self

    def detect(self, image, phrases, k):
        self.asked.append((k, list(phrases)))
        items = self.per_frame.get(k, [])
        return Detections(
            np.array([b for b, _ in items], np.float32).reshape(-1, 4),
            np.ones(len(items), np.float32),
            [lab for _, lab in items],
            [None] * len(items),
        )


def frames():
    return np.zeros((T, H, W, 3), np.uint8)


def generator(matching, box_picker=None):
    gen = MaskletGenerator(
        {"detector": {"kind": "oracle", "oracle_jitter": 0.0}, "matching": matching}, box_picker=box_picker
    )
    gen.tracker = StillTracker()
    return gen.setup()


def test_vlm_picker_sees_only_its_groups_boxes_with_group_indices():
    # detections in the order C (circle), B, A: masklets 0 = C, 1 = B, 2 = A
    gt = [(C, 2), (B, 1), (A, 0)]
    asked = []

    def picker(image, boxes, expression):
        asked.append((expression, boxes.tolist()))
        # the square group's boxes are [B, A]: the red square (A) is index 1 of the group, not of the clip
        return parse_object_indices({"the red square": "<obj1>", "the blue square": "<obj0>"}[expression])

    res = generator({"kind": "vlm"}, picker).generate(frames(), EXPRESSIONS, nouns=NOUNS, boxes_fn=lambda t: gt)
    assert res.anchor_frame == 2 and res.frames_searched == [2]
    # the circle group (1 expression, 1 masklet) needs no picker
    assert asked == [("the red square", [B, A]), ("the blue square", [B, A])]
    assert [e.label for e in res.entities] == ["circle", "Square", "square"]  # the oracle's label: the noun
    assert [e.expression_index for e in res.entities] == [2, 1, 0]
    assert res.counts == {}


def test_synthetic_matching_never_crosses_nouns():
    # Expression 1 (a square) has its ground-truth box on the circle's masklet C and no square box: without the
    # groups it would name C (IoU 1); within its group (squares: A only) it finds nothing.
    gen = generator({"kind": "synthetic"})
    gen.detector = StubDetector({2: [(A, "square"), (C, "circle"), (D, "circle")]})
    res = gen.generate(frames(), EXPRESSIONS, nouns=NOUNS, boxes_fn=lambda t: [(A, 0), (C, 1), (D, 2)])
    # square group: expressions 0, 1 over masklet 0 (A); circle group: expression 2 over masklets 1 (C), 2 (D)
    assert [e.expression_index for e in res.entities] == [0, None, 2]
    assert res.counts == {R.EXPRESSION_UNMATCHED: 1, R.MASKLET_UNREFERRED: 1}
    assert any("'the blue square'" in f.detail and "noun 'square'" in f.detail for f in res.failures)


def test_anchor_search_counts_all_nouns_together():
    # Frame 2 (first visited) has 3 boxes for 3 expressions, all squares: Strefer stops there although no circle
    # is seen (frame 0 has all three). The circle's expression has no masklet of its noun; the extra square D is
    # named by none.
    det = StubDetector(
        {2: [(A, "square"), (B, "square"), (D, "square")], 0: [(A, "square"), (B, "square"), (C, "circle")]}
    )
    gen = generator({"kind": "synthetic"})
    gen.detector = det
    res = gen.generate(frames(), EXPRESSIONS, nouns=NOUNS, boxes_fn=lambda t: [(A, 0), (B, 1)])
    assert res.anchor_frame == 2 and res.frames_searched == [2]
    assert det.asked == [(2, NOUNS)]  # one prompt holding every noun (the detector dedups it)
    assert [e.expression_index for e in res.entities] == [0, 1, None]
    assert res.counts == {R.EXPRESSION_UNMATCHED: 1, R.MASKLET_UNREFERRED: 1}
    assert any("'the green circle'" in f.detail and "noun 'circle'" in f.detail for f in res.failures)


def test_anchor_falls_back_to_most_detections_then_groups_match():
    # Never 3 boxes: counts per visited frame 2 -> 1, 0 -> 2, 3 -> 1, 1 -> 0, 4 -> 1; the anchor is frame 0,
    # the first with the most. There: square A (group of 2 expressions, 1 masklet) and circle C (1 and 1).
    det = StubDetector({2: [(B, "square")], 0: [(A, "square"), (C, "circle")], 3: [(C, "circle")], 4: [(D, "square")]})
    gen = generator({"kind": "synthetic"})
    gen.detector = det
    res = gen.generate(frames(), EXPRESSIONS, nouns=NOUNS, boxes_fn=lambda t: [(A, 0), (C, 2)])
    assert res.anchor_frame == 0 and res.frames_searched == [2, 0, 3, 1, 4]
    assert [e.expression_index for e in res.entities] == [0, 2]
    # expression 1 (a square) has no ground-truth box at the anchor: unmatched in its group
    assert res.counts == {R.FEWER_DETECTIONS: 1, R.EXPRESSION_UNMATCHED: 1}


def test_single_expression_and_masklet_of_a_noun_skip_the_matcher():
    # Each noun has one expression and one masklet: assigned directly, whatever the ground truth says (here
    # nothing: the synthetic matcher would leave both unmatched).
    gen = generator({"kind": "synthetic"})
    gen.detector = StubDetector({2: [(C, "circle"), (A, "square")]})
    res = gen.generate(frames(), EXPRESSIONS[::2], nouns=NOUNS[::2], boxes_fn=lambda t: [])
    assert [e.expression_index for e in res.entities] == [1, 0] and res.counts == {}


def test_labels_compared_by_letters_and_digits():
    # a word-piece detector decodes "t-shirt" as "t - shirt"; a label that is no noun names nothing
    gen = generator({"kind": "synthetic"})
    gen.detector = StubDetector({2: [(A, "t - shirt"), (B, "dog")]})
    res = gen.generate(frames(), ["the white T-shirt"], nouns=["T-shirt"], boxes_fn=lambda t: [])
    assert [e.expression_index for e in res.entities] == [0, None]
    assert res.counts == {R.MASKLET_UNREFERRED: 1}
