"""`stvl data synth --export rvos`: the synthetic set in MeViS's layout, read back by the same reader, and every
expression true of the simulation: each one picks exactly one entity when its predicate is recomputed from the
simulated tracks (positions and velocities of `scene.sample_scene`, not the annotation code)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from data_pipelines.formats.rvos import RvosDataset
from data_pipelines.rle import rle_decode
from data_pipelines.synthetic.scene import SIM_HZ, SceneParams, sample_scene

SEED, VIDEOS = 5, 20


@pytest.fixture(scope="module")
def rvos_set(tmp_path_factory):
    from stvl_jax.data_cli import main

    out = str(tmp_path_factory.mktemp("rvos_synth"))
    assert main(["synth", "--out", out, "--videos", str(VIDEOS), "--seed", str(SEED), "--workers", "1",
                 "--export", "rvos"]) == 0
    return out


def _scene(vid: str):
    index = int(vid.rsplit("_", 1)[-1])
    return sample_scene(np.random.default_rng(np.random.SeedSequence([SEED, index, 0])), SceneParams())


def _runs(flag: np.ndarray) -> list[int]:
    """Lengths of the runs of True."""
    out, n = [], 0
    for v in flag:
        n = n + 1 if v else 0
        if n == 1:
            out.append(0)
        if v:
            out[-1] = n
    return out


def _holds(scene, i: int, predicate: str) -> bool:
    x, vx = scene.x[i], scene.vx[i]
    present = ~np.isnan(x)
    if predicate == "stops moving":  # standing still for >= 1 s while in view
        return max(_runs(present & (vx == 0)), default=0) > SIM_HZ
    if predicate == "leaves and comes back":  # present, absent, present again
        return len(_runs(present)) >= 2
    raise AssertionError(predicate)


def _picked(scene, text: str) -> list[int]:
    """Entity ids (1-based, as annotated) the expression is true of, from the simulation alone."""
    ents = scene.entities
    if m := re.fullmatch(r"the (\w+) shape", text):
        return [e.id for e in ents if e.color == m[1]]
    if m := re.fullmatch(r"the (\w+)", text):
        return [e.id for e in ents if e.category == m[1]]
    m = re.fullmatch(r"the (\w+) that (enters last|enters first|stops moving|leaves and comes back)", text)
    assert m, f"unparsed expression {text!r}"
    scope = [i for i, e in enumerate(ents) if m[1] == "one" or e.category == m[1]]
    if m[1] != "one":  # a timing expression names a shape only when the shape alone does not decide
        assert len(scope) >= 2, text
    if m[2].startswith("enters"):
        first = {i: int(np.argmax(~np.isnan(scene.x[i]))) / SIM_HZ for i in scope}
        assert all(not np.isnan(scene.x[i]).all() for i in scope)
        order = sorted(first.values())
        pick = order[-1] if m[2] == "enters last" else order[0]
        # the picked one enters during the video and by a visible margin (0.5 s) before / after every other
        others = [t for i, t in first.items() if t != pick]
        assert pick > 0 and all(abs(pick - t) >= 0.5 for t in others), (text, first)
        if m[2] == "enters first":
            assert min(order) > 0
        return [ents[i].id for i, t in first.items() if t == pick]
    return [ents[i].id for i in scope if _holds(scene, i, m[2])]


def test_every_expression_picks_exactly_its_entity(rvos_set):
    kinds, n = set(), 0
    for split in ("train", "val", "test"):
        ds = RvosDataset(rvos_set, "synthetic", split)
        assert not ds.skipped
        meta = json.load(open(os.path.join(rvos_set, "rvos", split, "meta_expressions.json")))["videos"]
        for e in ds.expressions:
            scene = _scene(e.vid)
            entity = meta[e.vid]["expressions"][e.exp_id]["obj_id"]
            assert _picked(scene, e.text) == entity, (e.key, e.text)
            kinds.add((e.kind, e.text.split(" that ")[-1] if " that " in e.text else e.kind))
            n += 1
    assert n > 50
    assert {k for k, _ in kinds} == {"colour", "shape", "timing"}
    assert {p for k, p in kinds if k == "timing"} >= {"enters last", "stops moving", "leaves and comes back"}


def test_round_trip_masks_and_frames(rvos_set):
    from data_pipelines.video import decode_frames

    ds = RvosDataset(rvos_set, "synthetic", "val")
    meta = json.load(open(os.path.join(rvos_set, "rvos", "val", "meta_expressions.json")))["videos"]
    assert ds.expressions
    for e in ds.expressions:
        gt = json.load(open(os.path.join(rvos_set, "annotations", e.vid + ".json")))
        entity = meta[e.vid]["expressions"][e.exp_id]["obj_id"][0]
        want = np.zeros((gt["num_frames"], gt["height"], gt["width"]), bool)
        for k, fr in enumerate(gt["frames"]):
            for o in fr["objects"]:
                if o["entity"] == entity:
                    want[k] = rle_decode(o["rle"])
        assert want.any()
        assert len(e.frames) == gt["num_frames"]
        assert (ds.read_masks(e, (gt["height"], gt["width"])) == want).all()
    e = ds.expressions[0]
    frames = ds.read_frames(e, [0, 5])
    video = decode_frames(os.path.join(rvos_set, "videos", e.vid + ".mp4"), [0, 5])
    assert frames.shape == video.shape
    assert np.abs(frames.astype(int) - video).mean() < 2.0  # JPEG q95, 4:4:4


def test_data_synth_export_counts(rvos_set):
    manifest = json.load(open(os.path.join(rvos_set, "manifest.json")))
    for split, vids in manifest["splits"].items():
        meta = json.load(open(os.path.join(rvos_set, "rvos", split, "meta_expressions.json")))["videos"]
        assert sorted(meta) == sorted(vids)
        masks = json.load(open(os.path.join(rvos_set, "rvos", split, "mask_dict.json")))
        assert len(masks) == sum(len(v["objects"]) for v in meta.values())
