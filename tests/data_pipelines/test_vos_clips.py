"""VOS clips from the synthetic set: masks, case labels, counted skips, and SAM2-style prompt simulation."""

import json
import os
import shutil

import numpy as np
import pytest

from data_pipelines.errors import AnnotationError
from data_pipelines.rle import rle_decode
from data_pipelines.vos import (
    PromptConfig, VosClipConfig, VosReader, box_prompt, first_frame_box_prompts, make_clip, mask_to_box,
    sample_points, simulate_prompts, vos_synth_config,
)
from data_pipelines.vos.clips import Video, clip_windows


@pytest.fixture(scope="module")
def vos_dir(tmp_path_factory):
    from data_pipelines.synthetic import generate_dataset

    out = str(tmp_path_factory.mktemp("vos"))
    generate_dataset(out, vos_synth_config(num_videos=10, seed=4), workers=1)
    return out


def _visible(gt, entity):
    return np.asarray([any(o["entity"] == entity for o in fr["objects"]) for fr in gt["frames"]])


def test_returning_entities_are_opt_in():
    from data_pipelines.synthetic.render import render_frame
    from data_pipelines.synthetic.scene import SceneParams, sample_scene, trajectory_actions
    from stvl_jax.errors import ConfigError

    def scenes(p):
        return [sample_scene(np.random.default_rng(np.random.SeedSequence([0, i, 0])), p) for i in range(12)]

    # p_return = 0 draws nothing: the default scenes, trajectory for trajectory.
    for a, b in zip(scenes(SceneParams()), scenes(SceneParams(p_return=0.0))):
        assert np.array_equal(a.x, b.x, equal_nan=True)
    returns, entities = 0, 0
    for sc in scenes(SceneParams(p_return=1.0)):
        acts = trajectory_actions(sc)
        ids = np.stack([render_frame(sc, k)[1] for k in range(sc.num_frames)])
        for e in sc.entities:
            entities += 1
            vis = (ids == e.id).any(axis=(1, 2))
            idx = np.flatnonzero(vis)
            exits = [a for a in acts if a["entity"] == e.id and a["action"] == "exit" and not a.get("truncated")]
            # Seen, then fully out of frame for > 1 s, then seen again, after a completed exit.
            gaps = [(i, j) for i, j in zip(idx[:-1], idx[1:]) if (j - i - 1) / sc.fps >= 1.0]
            if exits and any(i / sc.fps <= exits[0]["end"] <= j / sc.fps for i, j in gaps):
                returns += 1
    assert returns / entities >= 0.2, (returns, entities)
    with pytest.raises(ConfigError, match="p_return"):
        SceneParams(p_return=1.5)


def test_clip_masks_are_the_annotation_masks(vos_dir):
    reader = VosReader(vos_dir, "train")
    clips = list(reader.clips())
    assert clips and not reader.skipped
    for clip in clips[:6]:
        gt = json.load(open(os.path.join(vos_dir, "annotations", clip.vid + ".json")))
        assert clip.masks.shape == (clip.num_objects, 8, gt["height"], gt["width"])
        assert np.all(np.diff(clip.frame_indices) == 2)
        for o, e in enumerate(clip.entity_ids):
            for t, k in enumerate(clip.frame_indices):
                obj = next((x for x in gt["frames"][k]["objects"] if x["entity"] == e), None)
                want = rle_decode(obj["rle"]) if obj else np.zeros((gt["height"], gt["width"]), bool)
                assert np.array_equal(clip.masks[o, t], want)
            assert clip.first_visible[o] == int(np.argmax(_visible(gt, int(e))[clip.frame_indices]))
        assert os.path.exists(clip.video)
    # Tiling: non-overlapping windows of 15 source frames from frame 0; a 48-frame video holds 3.
    assert [w.tolist()[:2] for w in clip_windows(VosClipConfig(), 48)] == [[0, 2], [15, 17], [30, 32]]


def _hand_video():
    """6 frames of 8x8. A: circle, visible throughout. B: circle, enters at frame 2. C: square, frames 0-1 and
    4-5 with an exit/enter in between. D: square, hidden on frame 1 only (no exit: behind something)."""
    m = np.zeros((4, 6, 8, 8), bool)
    m[0, :, 0:2, 0:2] = True
    m[1, 2:, 4:6, 0:2] = True
    m[2, [0, 1, 4, 5], 0:2, 5:7] = True
    m[3, [0, 2, 3, 4, 5], 5:7, 5:7] = True
    actions = [{"entity": 13, "action": "exit", "start": 0.3, "end": 0.6},
               {"entity": 13, "action": "enter", "start": 0.8, "end": 1.0, "occurrence": 0}]
    return Video(vid="hand", video="/nonexistent.mp4", fps=4.0, masks=m, entity_ids=np.asarray([11, 12, 13, 14]),
                 categories=["circle", "circle", "square", "square"], actions=actions)


def test_case_labels_by_construction():
    clip = make_clip(_hand_video(), np.arange(6))
    assert clip.entity_ids.tolist() == [11, 12, 13, 14]
    assert clip.cases == [["twin"], ["late_entry", "twin"], ["exit_reentry", "twin"], ["occlusion", "twin"]]
    assert clip.case == ["twin", "late_entry", "exit_reentry", "occlusion"]
    assert clip.first_visible.tolist() == [0, 2, 0, 0]
    # Frames 0, 1 only: B is never visible (not an object); no other circle is then visible to A.
    clip = make_clip(_hand_video(), [0, 1])
    assert clip.entity_ids.tolist() == [11, 13, 14] and clip.cases[0] == [] and clip.case[0] == "plain"
    # min_area: a 4-pixel mask does not count as visible at min_area 5 -> no objects at all.
    assert make_clip(_hand_video(), np.arange(6), VosClipConfig(min_area=5)).num_objects == 0


def test_whole_video_clips_cover_every_case(vos_dir):
    reader = VosReader(vos_dir, "train", VosClipConfig(num_frames=None, frame_stride=1))
    seen = {}
    for clip in reader.clips():
        gt = json.load(open(os.path.join(vos_dir, "annotations", clip.vid + ".json")))
        assert clip.masks.shape[1] == gt["num_frames"]
        for o, cases in enumerate(clip.cases):
            for c in cases:
                seen[c] = seen.get(c, 0) + 1
            e = int(clip.entity_ids[o])
            vis = _visible(gt, e)
            if "exit_reentry" in cases:  # the ground truth says it left the frame between two sightings
                idx = np.flatnonzero(vis)
                gap = [(i, j) for i, j in zip(idx[:-1], idx[1:]) if j > i + 1]
                assert any(a["entity"] == e and a["action"] == "exit" and i / gt["fps"] <= a["end"]
                           and a["start"] <= j / gt["fps"] for a in gt["actions"] for i, j in gap)
            if "late_entry" in cases:
                assert not vis[0] and vis.any()
    assert seen.get("exit_reentry", 0) >= 3 and seen.get("late_entry", 0) >= 3 and seen.get("twin", 0) >= 3, seen


def test_bad_records_are_counted_skips(vos_dir, tmp_path):
    d = tmp_path / "set"
    shutil.copytree(vos_dir, d)
    train = json.load(open(d / "manifest.json"))["splits"]["train"]
    ann = d / "annotations"
    (ann / f"{train[0]}.json").write_text("{not json")
    gt = json.load(open(ann / f"{train[1]}.json"))
    fr = next(f for f in gt["frames"] if f["objects"])
    fr["objects"][0]["rle"]["counts"][0] += 1
    json.dump(gt, open(ann / f"{train[1]}.json", "w"))
    gt = json.load(open(ann / f"{train[2]}.json"))
    gt["frames"] = gt["frames"][:-1]
    json.dump(gt, open(ann / f"{train[2]}.json", "w"))
    os.remove(ann / f"{train[3]}.json")
    reader = VosReader(str(d), "train")
    clips = list(reader.clips())
    assert {c.vid for c in clips} == set(train[4:])
    assert dict(reader.skipped) == {"bad_json": 1, "bad_rle": 1, "frame_count_mismatch": 1, "unreadable": 1}
    with pytest.raises(AnnotationError, match=rf"{train[0]}\.json: not JSON.*\[bad_json\]"):
        list(VosReader(str(d), "train", strict=True).clips())
    # Clips longer than every video: counted per video.
    long = VosReader(str(d), "train", VosClipConfig(num_frames=100))
    assert list(long.clips()) == [] and long.skipped["video_too_short"] == len(train) - 4
    # Decoding: a missing mp4 is a counted skip, the others decode to (T, H, W, 3).
    os.remove(d / "videos" / f"{train[4]}.mp4")
    dec = VosReader(str(d), "train", decode=True)
    got = list(dec.clips())
    assert got and all(c.frames.shape == (8, 128, 128, 3) for c in got)
    assert dec.skipped["video_decode"] == sum(1 for c in clips if c.vid == train[4])
    with pytest.raises(AnnotationError, match="unknown_split"):
        VosReader(str(d), "dev")


def test_sample_is_seeded_and_limits_objects(vos_dir):
    reader = VosReader(vos_dir, "train", VosClipConfig(max_objects=2))
    a = [reader.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0].vid == a[1].vid and np.array_equal(a[0].frame_indices, a[1].frame_indices)
    assert np.array_equal(a[0].entity_ids, a[1].entity_ids)
    rng = np.random.default_rng(1)
    sizes = {reader.sample(rng).num_objects for _ in range(30)}
    assert sizes <= {1, 2} and 2 in sizes


def test_box_and_points_follow_sam2():
    m = np.zeros((20, 30), bool)
    m[4:10, 6:21] = True  # rows 4..9, cols 6..20
    assert mask_to_box(m).tolist() == [6, 4, 20, 9]
    rng = np.random.default_rng(0)
    # Noise: each coordinate moves by at most min(0.1 x side, 20) = 1.4 (x, side 14) and 0.5 (y, side 5).
    boxes = np.stack([box_prompt(m, rng) for _ in range(500)])
    d = np.abs(boxes - [6, 4, 20, 9])
    assert d[:, [0, 2]].max() <= 1.4 + 1e-5 and d[:, [1, 3]].max() <= 0.5 + 1e-6 and d.max() > 0.3
    # Clamped to the frame: a mask touching the right edge never gets x1 > W - 1.
    edge = np.zeros((20, 30), bool)
    edge[2:8, 20:30] = True
    assert max(box_prompt(edge, rng)[2] for _ in range(200)) <= 29
    # Initial click: inside the mask, positive.
    pts, lab = sample_points(m, None, rng, num=200)
    assert (lab == 1).all() and m[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    # Correct prediction: a negative click on the background.
    pts, lab = sample_points(m, m, rng, num=50)
    assert (lab == 0).all() and not m[pts[:, 1].astype(int), pts[:, 0].astype(int)].any()
    # Errors: 30 false-negative pixels and 10 false-positive pixels -> P(positive) = 30 / 40; positives lie in
    # the FN region, negatives in the FP region. 4000 clicks: std of the share is 0.007, allow 0.03.
    gt = np.zeros((10, 10), bool)
    gt[0:3, :] = True  # 30 px
    pred = np.zeros((10, 10), bool)
    pred[5, :] = True  # 10 px
    pts, lab = sample_points(gt, pred, rng, num=4000)
    y, x = pts[:, 1].astype(int), pts[:, 0].astype(int)
    assert gt[y[lab == 1], x[lab == 1]].all() and pred[y[lab == 0], x[lab == 0]].all()
    assert abs(lab.mean() - 0.75) < 0.03


def test_simulated_prompts(vos_dir):
    clip = make_clip(_hand_video(), np.arange(6))
    a = simulate_prompts(clip, np.random.default_rng(3))
    b = simulate_prompts(clip, np.random.default_rng(3))
    assert [(p.object, p.frame, p.kind) for p in a] == [(p.object, p.frame, p.kind) for p in b]
    kinds, n_frames, clips = {"box": 0, "points": 0, "mask": 0}, [], 2000
    rng = np.random.default_rng(0)
    for _ in range(clips):
        ps = simulate_prompts(clip, rng)
        for o in range(clip.num_objects):
            mine = [p for p in ps if p.object == o]
            n_frames.append(len(mine))
            assert mine[0].frame == clip.first_visible[o]  # the first prompt is on the first visible frame
            for p in mine:
                assert clip.masks[o, p.frame].any()
                if p.kind == "mask":
                    assert np.array_equal(p.mask, clip.masks[o, p.frame])
                elif p.kind == "points":
                    assert p.labels.tolist() == [1] and clip.masks[o, p.frame][int(p.points[0, 1]),
                                                                               int(p.points[0, 0])]
                else:
                    assert p.labels.tolist() == [2, 3] and p.points.shape == (2, 2)
        kinds[ps[0].kind] += 1
    # SAM2 defaults: P(mask) = 0.5, P(box) = P(points) = 0.25 per clip's first slot; 1 or 2 frames equally
    # (object B is visible on 4 frames, others on >= 4, so a 2nd frame always exists). 2000 clips: std <= 0.011.
    assert abs(kinds["mask"] / clips - 0.5) < 0.04 and abs(kinds["box"] / clips - 0.25) < 0.04
    assert set(n_frames) == {1, 2} and abs(np.mean(n_frames) - 1.5) < 0.04
    assert {p.kind for p in simulate_prompts(clip, rng, PromptConfig(prob_points=1.0, prob_box=1.0))} == {"box"}
    # Evaluation prompts: the exact box on each object's first visible frame.
    ev = first_frame_box_prompts(clip)
    assert [(p.frame, p.box.tolist()) for p in ev] == [(0, [0, 0, 1, 1]), (2, [0, 4, 1, 5]), (0, [5, 0, 6, 1]),
                                                       (0, [5, 5, 6, 6])]


def test_clip_arrays_have_fixed_shapes():
    from data_pipelines.vos import CASE_NAMES, Prompt, clip_arrays, collate

    clip = make_clip(_hand_video(), np.arange(6))
    prompts = [Prompt(0, 0, "box", points=np.asarray([[0, 0], [1, 1]], np.float32), labels=np.asarray([2, 3])),
               Prompt(1, 2, "points", points=np.asarray([[0.0, 4.0]], np.float32), labels=np.asarray([1])),
               Prompt(2, 0, "mask", mask=clip.masks[2, 0]), Prompt(2, 4, "mask", mask=clip.masks[2, 4])]
    a = clip_arrays(clip, prompts, max_objects=6)
    assert a["masks"].shape == (6, 6, 8, 8) and a["object_valid"].tolist() == [True] * 4 + [False] * 2
    assert a["entity_ids"].tolist() == [11, 12, 13, 14, -1, -1] and a["first_visible"].tolist()[4:] == [-1, -1]
    assert [CASE_NAMES[c] for c in a["case"][:4]] == clip.case and a["case"][4] == -1
    assert np.flatnonzero(a["cond"].ravel()).tolist() == [0, 6 + 2, 12 + 0, 12 + 4]
    assert a["point_labels"][0, 0].tolist() == [2, 3] and a["point_labels"][1, 2].tolist() == [1, -1]
    assert a["point_coords"][1, 2, 0].tolist() == [0.0, 4.0] and (a["point_labels"][2:] == -1).all()
    assert a["has_mask_input"][2].tolist() == [True, False, False, False, True, False]
    assert np.array_equal(a["mask_inputs"][2, 4], clip.masks[2, 4]) and not a["mask_inputs"][:2].any()
    b = collate([a, clip_arrays(clip, [], max_objects=6)])
    assert b["masks"].shape == (2, 6, 6, 8, 8) and not b["cond"][1].any()
    with pytest.raises(ValueError, match="do not fit max_objects=3"):
        clip_arrays(clip, prompts, max_objects=3)
    with pytest.raises(ValueError, match="give the reader one clip length"):
        collate([a, clip_arrays(make_clip(_hand_video(), np.arange(4)), [], max_objects=6)])
