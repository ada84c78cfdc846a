"""The masklet quality probe (research/probes/strefer_masklet_quality.py): hand-built recovery and identity-switch
cases, and a run with a tracker that returns the ground truth (J&F exactly 1, everything recovered)."""

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from data_pipelines.strefer.masklets.boxes import box_iou  # noqa: E402
from data_pipelines.strefer.masklets.trackers import TrackOutput  # noqa: E402
from research.probes.strefer_masklet_quality import identity_switches, main, recovery  # noqa: E402


def masks(pattern, pixel=0):
    """[0/1 per frame] -> (T, 1, 2) bool with the given pixel on where 1."""
    m = np.zeros((len(pattern), 1, 2), bool)
    m[np.asarray(pattern, bool), 0, pixel] = True
    return m


def test_late_entry_recovered_only_when_absent_before_and_right_after():
    gt = masks([0, 0, 1, 1, 1, 1])
    assert recovery(gt, gt) == {"late_entry": True}
    assert recovery(gt, masks([1, 1, 1, 1, 1, 1])) == {"late_entry": False}  # on before it enters
    assert recovery(gt, masks([0, 0, 1, 1, 1, 1], pixel=1)) == {"late_entry": False}  # wrong pixels


def test_reentry_recovered_needs_the_gap_empty_and_the_return_found():
    gt = masks([1, 1, 0, 0, 1, 1])
    assert recovery(gt, gt) == {"exit_reentry": True}
    assert recovery(gt, masks([1, 1, 1, 1, 1, 1])) == {"exit_reentry": False}  # never judged gone
    assert recovery(gt, masks([1, 1, 0, 0, 0, 0])) == {"exit_reentry": False}  # return missed


def test_identity_switches_count_changes_of_the_covered_entity():
    a, b = masks([1] * 5, 0), masks([1] * 5, 1)
    pred = np.stack([a[0], a[1], b[2], b[3], a[4]])  # A, A, B, B, A -> 2 switches
    assert identity_switches([a, b], pred) == 2
    assert identity_switches([a, b], a) == 0


class GroundTruthTracker:
    """Returns each prompted entity's true masks: frames are found in the decoded clip, boxes matched to the
    ground-truth boxes of the prompt frame."""

    def __init__(self, clip, gt_frames):
        self.clip, self.gt_frames = clip, gt_frames  # gt_frames[k]: [(xyxy, (H, W) mask)]

    def track(self, frames, boxes):
        ks = [next(i for i in range(len(self.clip)) if np.array_equal(f, self.clip[i])) for f in frames]
        gt0 = self.gt_frames[ks[0]]
        pick = [int(np.argmax(box_iou(np.array([b]), np.array([g[0] for g in gt0]))[0])) for b in boxes]
        m = np.stack([np.stack([self.gt_frames[ks[0]][p][2][k] for p in pick]) for k in ks])
        return TrackOutput(m, np.where(m.any(axis=(2, 3)), 5.0, -5.0).astype(np.float32))


def test_ground_truth_tracker_scores_one(tmp_path, monkeypatch):
    import research.probes.strefer_masklet_quality as probe
    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from data_pipelines.strefer.masklets.synthetic import entity_expressions, gt_boxes_fn, gt_masks, load_clip

    synth_dir = str(tmp_path)
    generate_dataset(synth_dir, SynthConfig(num_videos=3, seed=0), workers=1)  # late entries, an exit/re-entry
    vids = ["synth_00000", "synth_00001", "synth_00002"]
    real_setup = probe.MaskletGenerator.setup

    def setup(self):
        self.tracker = _Dispatch()
        return real_setup(self)

    class _Dispatch:
        def track(self, frames, boxes):
            for vid in vids:
                clip, gt, idx = load_clip(synth_dir, vid, 8)
                if any(np.array_equal(frames[0], f) for f in clip):
                    _, _, ids = entity_expressions(gt)
                    fn = gt_boxes_fn(gt, idx, ids)
                    all_masks = [gt_masks(gt, idx, e) for e in ids]
                    per_frame = [[(b, e, all_masks[e]) for b, e in fn(k)] for k in range(len(clip))]
                    return GroundTruthTracker(clip, per_frame).track(frames, boxes)
            raise AssertionError("frame not from the test clips")

    monkeypatch.setattr(probe.MaskletGenerator, "setup", setup)
    report = main(["--synth", synth_dir, "--split", "train", "--limit", "3", "--frames", "8", "--sam2-hf", "unused"])
    assert report["jf"]["model"]["overall"] == 1.0
    assert report["identity_switches"] == 0
    assert report["late_entry_recovered"][0] == report["late_entry_recovered"][1] >= 1
    assert report["reentry_recovered"][0] == report["reentry_recovered"][1] >= 1
    assert report["jf"]["empty"]["overall"] < 1.0
