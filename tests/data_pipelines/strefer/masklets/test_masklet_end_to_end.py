"""The generator end to end on a synthetic clip with tiny random models (plumbing: shapes, masklet count, anchor,
presence bookkeeping, matching), with both SAM2 backends, and with a tiny random GroundingDINO in the loop."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("pycocotools")
pytestmark = pytest.mark.torch

from data_pipelines.strefer.masklets import MaskletGenerator  # noqa: E402
from data_pipelines.strefer.masklets import coco_rle  # noqa: E402
from data_pipelines.strefer.masklets.boxes import anchor_search_order, box_iou  # noqa: E402
from data_pipelines.strefer.masklets.synthetic import entity_expressions, gt_boxes_fn, load_clip  # noqa: E402

N_FRAMES = 6
# Meta's hiera-t config cut to a tiny random model: 64 px input, 5 Hiera blocks, 1 memory-attention layer
META_TINY = ("++model.image_size=64", "++model.image_encoder.trunk.stages=[1,1,2,1]",
             "++model.image_encoder.trunk.global_att_blocks=[3]", "++model.memory_attention.num_layers=1")


@pytest.fixture(scope="module")
def clip(synth_dir):
    """The first synthetic video of the shared test set with 2 entities, one of them absent on some frame."""
    for i in range(10):
        frames, gt, idx = load_clip(synth_dir, f"synth_{i:05d}", N_FRAMES)
        ex, nouns, ids = entity_expressions(gt)
        fn = gt_boxes_fn(gt, idx, ids)
        if len(ex) == 2 and any(len(fn(t)) < 2 for t in range(N_FRAMES)):
            return frames, ex, nouns, fn
    pytest.fail("no 2-entity clip with an absence in the shared synthetic test set")


def check_result(res, frames, ex, fn):
    t, h, w = frames.shape[:3]
    # the anchor is the first frame in Strefer's order where every entity is visible (the oracle sees them all)
    want = next(k for k in anchor_search_order(t) if len(fn(k)) >= len(ex))
    assert res.anchor_frame == want and res.frames_searched[-1] == want
    assert len(res.entities) == len(fn(want)) == 2
    for e in res.entities:
        assert len(e.masks) == len(e.object_scores) == t
        for m, s in zip(e.masks, e.object_scores):
            if m is not None:
                assert s > 0 and coco_rle.decode(m).shape == (h, w) and coco_rle.area(m) > 0
        assert e.reentries == max(len(e.visible_runs()) - 1, 0)
    # synthetic matching: each expression named the masklet prompted with its own ground-truth box
    gt_at_anchor = {ei: box for box, ei in fn(want)}
    for e in res.entities:
        assert box_iou(np.array([e.anchor_box]), np.array([gt_at_anchor[e.expression_index]]))[0, 0] > 0.5
    assert sorted(res.by_expression()) == [0, 1]
    json.dumps(res.to_dict())


def test_oracle_with_hf_sam2(clip, hf_sam2_dir):
    frames, ex, nouns, fn = clip
    gen = MaskletGenerator({"torch_threads": 1, "detector": {"kind": "oracle"},
                            "tracker": {"backend": "hf", "path": hf_sam2_dir}})
    res = gen.setup().generate(frames, ex, nouns=nouns, boxes_fn=fn)
    check_result(res, frames, ex, fn)
    # the redrawn tiny model reports objects present: masklets are not all empty
    assert any(m is not None for e in res.entities for m in e.masks)


def test_oracle_with_meta_sam2(clip):
    pytest.importorskip("sam2")
    frames, ex, nouns, fn = clip
    gen = MaskletGenerator({"torch_threads": 1, "detector": {"kind": "oracle"},
                            "tracker": {"backend": "sam2", "model_overrides": list(META_TINY)}})
    res = gen.setup().generate(frames, ex, nouns=nouns, boxes_fn=fn)
    check_result(res, frames, ex, fn)


@pytest.mark.parametrize("backend", ["hf", "sam2"])
def test_tiny_grounding_dino_in_the_loop(clip, gdino_dir, hf_sam2_dir, backend):
    frames, ex, nouns, fn = clip
    tracker = ({"backend": "hf", "path": hf_sam2_dir} if backend == "hf" else
               {"backend": "sam2", "model_overrides": list(META_TINY)})
    gen = MaskletGenerator({"torch_threads": 1, "detector": {"kind": "grounding_dino", "path": gdino_dir},
                            "tracker": tracker, "matching": {"kind": "grounding"}})
    gen.setup()
    det = gen.detector.detect(frames[0], nouns)
    h, w = frames.shape[1:3]
    # Strefer's post-processing: every kept detection scores >= 0.5 and has a phrase; boxes lie in the frame
    assert (det.scores >= 0.5).all() and all(lab.strip() for lab in det.labels)
    assert det.boxes.shape == (len(det), 4) and (det.boxes[:, 0::2] <= w + 1e-3).all()
    res = gen.generate(frames, ex, nouns=nouns)
    assert res.anchor_frame is not None  # the seeded random model does detect (scores >= 0.5) somewhere
    assert len(res.entities) >= 1 and all(len(e.masks) == len(frames) for e in res.entities)
    named = [e.expression_index for e in res.entities if e.expression_index is not None]
    assert len(named) == len(set(named))  # one-to-one
    # every expression is either named, conflicting or unmatched: each counted exactly once
    c = res.counts
    assert len(named) + c.get("matching_conflict", 0) + c.get("expression_unmatched", 0) == len(ex)


def test_tiny_owlv2_detector(clip, owlv2_dir, hf_sam2_dir):
    frames, ex, nouns, fn = clip
    h, w = frames.shape[1:3]
    gen = MaskletGenerator({"torch_threads": 1, "matching": {"kind": "none"},
                            "detector": {"kind": "owlv2", "path": owlv2_dir, "owlv2_threshold": 0.0,
                                         "min_score": 0.3},
                            "tracker": {"backend": "hf", "path": hf_sam2_dir}}).setup()
    det = gen.detector.detect(frames[0], nouns)
    assert len(det) > 0 and (det.scores >= 0.3).all()
    assert set(det.labels) <= set(nouns)  # labels are the queries
    assert (det.boxes[:, 0::2] >= 0).all() and (det.boxes[:, 0::2] <= w).all()
    assert (det.boxes[:, 1::2] >= 0).all() and (det.boxes[:, 1::2] <= h).all()
    res = gen.generate(frames, ex, nouns=nouns)
    assert len(res.entities) == len(gen.detector.detect(frames[res.anchor_frame], nouns))
    assert all(e.expression_index is None for e in res.entities) and res.counts.get("masklet_unreferred") is None


@pytest.mark.parametrize("bias", [-100.0, 100.0])
def test_hf_object_score_decides_presence(clip, hf_sam2_dir, tmp_path, bias):
    """SAM2's object-score head pushed far negative: every entity judged absent on every frame (no RLE, a
    counted empty anchor); far positive: present on every frame."""
    import torch
    from transformers import Sam2VideoModel

    model = Sam2VideoModel.from_pretrained(hf_sam2_dir)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(bias)
    model.save_pretrained(str(tmp_path))
    frames, ex, nouns, fn = clip
    gen = MaskletGenerator({"torch_threads": 1, "detector": {"kind": "oracle"},
                            "tracker": {"backend": "hf", "path": str(tmp_path)}})
    res = gen.setup().generate(frames, ex, nouns=nouns, boxes_fn=fn)
    for e in res.entities:
        if bias < 0:
            assert e.masks == [None] * len(frames) and max(e.object_scores) < 0 and e.first_frame is None
        else:
            assert None not in e.masks and min(e.object_scores) > 0 and e.visible_runs() == [(0, len(frames) - 1)]
    assert res.counts.get("empty_mask_at_anchor", 0) == (len(res.entities) if bias < 0 else 0)
