"""The generator's own logic with a hand-built tracker: anchor search, forward/backward merge through the
Hungarian match, presence from the object score, late entry and re-entry, synthetic matching, bad inputs."""

import numpy as np
import pytest

pytest.importorskip("pycocotools")
pytest.importorskip("scipy")

from data_pipelines.strefer.masklets import MaskletConfig, MaskletGenerator, MaskletInputError  # noqa: E402
from data_pipelines.strefer.masklets import result as R  # noqa: E402
from data_pipelines.strefer.masklets.detectors import Detections  # noqa: E402
from data_pipelines.strefer.masklets.trackers import TrackOutput  # noqa: E402
from stvl_jax.errors import ConfigError  # noqa: E402

T, H, W = 5, 8, 8
# PRESENT[i][k]: entity i visible at frame k. Entity 0 leaves after 0 and comes back at 2 (one re-entry),
# leaves again at 4; entity 1 enters late, at frame 2.
PRESENT = [[1, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


def square(i, k):
    """Entity i's hand mask at frame k: rows k..k+1, cols 4i..4i+1 (encodes both)."""
    m = np.zeros((H, W), bool)
    m[k:k + 2, 4 * i:4 * i + 2] = True
    return m


class HandTracker:
    """Reads the frame index from the pixels; the forward run (frames ascending from the anchor) returns its
    objects in swapped order, as a SAM2 run with other ids would."""

    def __init__(self):
        self.calls = []

    def track(self, frames, boxes):
        ks = [int(f[0, 0, 0]) for f in frames]
        self.calls.append(ks)
        n = len(boxes)
        masks = np.zeros((len(ks), n, H, W), bool)
        scores = np.zeros((len(ks), n), np.float32)
        forward = len(ks) > 1 and ks[1] > ks[0]
        for j, k in enumerate(ks):
            for i in range(n):
                col = (n - 1 - i) if forward else i
                if PRESENT[i][k]:
                    masks[j, col] = square(i, k)
                scores[j, col] = 2.0 if PRESENT[i][k] else -3.0
        return TrackOutput(masks, scores)


def frames():
    return np.repeat(np.arange(T, dtype=np.uint8), H * W * 3).reshape(T, H, W, 3)


def boxes_fn(t):
    # ground truth: entity 0 is named by expression 1, entity 1 by expression 0
    return [([4.0 * i, t, 4.0 * i + 2, t + 2], 1 - i) for i in range(2) if PRESENT[i][t]]


def generator(**matching):
    gen = MaskletGenerator({"detector": {"kind": "oracle", "oracle_jitter": 0.0}, "matching": matching or {}})
    gen.tracker = HandTracker()
    return gen.setup()


def test_merge_presence_reentry_and_matching():
    gen = generator()
    # one noun: both masklets in one group, so the synthetic matcher (not the one-and-one shortcut) names them
    res = gen.generate(frames(), ["the second", "the first"], nouns=["square", "square"], boxes_fn=boxes_fn)
    # order for T=5: [2, 0, 3, 1, 4]; frame 2 already has both entities
    assert res.anchor_frame == 2 and res.frames_searched == [2]
    # forward: anchor..end; backward: anchor..start reversed
    assert gen.tracker.calls == [[2, 3, 4], [2, 1, 0]]
    assert res.counts == {R.DIRECTION_SWAP: 1}
    e0, e1 = res.entities
    assert e0.present == [True, False, True, True, False] and e0.reentries == 1
    assert e0.visible_runs() == [(0, 0), (2, 3)]
    assert e1.present == [False, False, True, True, True] and e1.first_frame == 2 and e1.reentries == 0
    for i, e in enumerate(res.entities):
        got = res.mask_array(e)
        for k in range(T):
            assert (got[k] == (square(i, k) if PRESENT[i][k] else np.zeros((H, W), bool))).all(), (i, k)
        assert e.object_scores == [2.0 if p else -3.0 for p in PRESENT[i]]
    assert e0.expression_index == 1 and e1.expression_index == 0
    assert res.by_expression() == {1: e0, 0: e1}
    assert e0.anchor_box == [0.0, 2.0, 2.0, 4.0]


def test_anchor_falls_back_to_the_frame_with_most_detections():
    gen = generator()
    counts = {0: 0, 1: 1, 2: 0, 3: 1, 4: 0}  # never the 3 expressions; 1 box first seen at frame 3 in the order

    class Stub:
        def detect(self, image, phrases, k):
            return Detections(np.tile([[0, 0, 2, 2]], (counts[k], 1)).astype(np.float32),
                              np.ones(counts[k], np.float32), ["x"] * counts[k], [None] * counts[k])

    gen.detector = Stub()
    anchor, det, visited = gen.find_anchor(frames(), ["a", "b", "c"], 3)
    assert (anchor, len(det), visited) == (3, 1, [2, 0, 3, 1, 4])


def test_no_detection_anywhere_is_a_counted_failure():
    gen = generator()
    res = gen.generate(frames(), ["a"], boxes_fn=lambda t: [])
    assert res.entities == [] and res.anchor_frame is None and res.counts == {R.NO_DETECTIONS: 1}
    assert gen.tracker.calls == []


def test_fewer_boxes_than_expressions_and_unmatched_expression_are_counted():
    gen = generator()
    res = gen.generate(frames(), ["a", "b", "c"], boxes_fn=boxes_fn)
    assert res.anchor_frame == 2  # most boxes (2), first in visiting order
    assert res.counts == {R.FEWER_DETECTIONS: 1, R.DIRECTION_SWAP: 1, R.EXPRESSION_UNMATCHED: 1}
    assert res.to_dict()["counts"] == res.counts


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 8, 8), np.uint8), "T, H, W, 3"),
    (np.zeros((5, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
])
def test_bad_frames_are_one_clear_error(bad, match):
    with pytest.raises(MaskletInputError, match=match):
        generator().generate(bad, ["a"], boxes_fn=boxes_fn)


def test_bad_expressions_and_missing_ground_truth():
    gen = generator()
    with pytest.raises(MaskletInputError, match="non-empty"):
        gen.generate(frames(), [], boxes_fn=boxes_fn)
    with pytest.raises(MaskletInputError, match="one generalized noun per expression"):
        gen.generate(frames(), ["a", "b"], nouns=["x"], boxes_fn=boxes_fn)
    with pytest.raises(MaskletInputError, match="need boxes_fn"):
        gen.generate(frames(), ["a"])


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown masklets.tracker config keys"):
        MaskletConfig.from_dict({"tracker": {"backnd": "hf"}})
    with pytest.raises(ConfigError, match="needs detector.path"):
        MaskletConfig.from_dict({"detector": {"kind": "grounding_dino"}})
    with pytest.raises(ConfigError, match="box_picker"):
        MaskletGenerator({"detector": {"kind": "oracle"}, "matching": {"kind": "vlm"}})
    cfg = MaskletConfig.from_dict({"detector": {"kind": "oracle"}, "tracker": {"backend": "sam2"}})
    assert MaskletConfig.from_dict(cfg.to_dict()) == cfg


def test_vlm_box_picker_hook():
    answers = {"the second": "<obj1>", "the first": "<obj0>"}
    from data_pipelines.strefer.masklets.matching import parse_object_indices

    gen = MaskletGenerator({"detector": {"kind": "oracle", "oracle_jitter": 0.0}, "matching": {"kind": "vlm"}},
                           box_picker=lambda img, boxes, e: parse_object_indices(answers[e]))
    gen.tracker = HandTracker()
    # one noun for both: a group of 2 expressions and 2 masklets, so the picker decides (distinct nouns, or none,
    # would make one group per expression, each with its one masklet, and no question to ask)
    res = gen.setup().generate(frames(), ["the second", "the first"], nouns=["square", "square"], boxes_fn=boxes_fn)
    assert [e.expression_index for e in res.entities] == [1, 0]


@pytest.mark.parametrize("cfg, err, match", [
    ({"detector": {"kind": "grounding_dino", "path": "/nonexistent/gdino"}}, "CheckpointError", "no config.json"),
    ({"detector": {"kind": "oracle"}, "tracker": {"backend": "hf", "path": "/nonexistent/sam2"}},
     "CheckpointError", "no config.json"),
    ({"detector": {"kind": "oracle"}, "tracker": {"path": "/nonexistent/sam2.pt"}}, "CheckpointError",
     "does not exist"),
    ({"detector": {"kind": "oracle"}, "tracker": {"model_overrides": ["++model.image_size=x=y"]}}, "ConfigError",
     "overrides"),
])
def test_missing_models_are_one_clear_error(cfg, err, match):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    import stvl_jax.errors as errors

    with pytest.raises(getattr(errors, err), match=match):
        MaskletGenerator(cfg).setup()
