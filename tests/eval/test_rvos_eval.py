"""`stvl eval rvos` end to end with control predictors whose J&F is known by hand: an oracle (the ground truth:
1.0), a wrong-entity predictor (another entity's masks: J only where both are empty), and black frames; ReVOS's
official overall; submission PNGs; one-line errors for a checkpoint that is not VIRST."""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines.formats.rvos import RvosDataset
from data_pipelines.rle import coco_rle_encode
from stvl_jax.errors import InputError
from stvl_jax.eval.rvos_eval import evaluate_rvos, run_rvos


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from stvl_jax.data_cli import main

    out = str(tmp_path_factory.mktemp("rvos_eval"))
    assert main(["synth", "--out", out, "--videos", "10", "--seed", "3", "--workers", "1", "--export", "rvos"]) == 0
    return out


def _key(frames: np.ndarray, text: str) -> tuple[str, str]:
    return hashlib.sha1(frames.tobytes()).hexdigest(), text


class Lookup:
    """A predictor answering from a table {(frames digest, expression): masks}; all-empty masks otherwise (so on
    black frames it predicts nothing)."""

    def __init__(self, table):
        self.table = table

    def __call__(self, frames, text):
        return self.table.get(_key(frames, text), np.zeros(frames.shape[:3], bool))


def _tables(ds: RvosDataset, limit: int):
    """(oracle table, wrong-entity table, gt per expression, other entity's gt per expression)."""
    oracle, wrong, gts, others = {}, {}, [], []
    for e in ds.expressions[:limit]:
        frames = ds.read_frames(e)
        gt = ds.read_masks(e, frames.shape[1:3])
        other = next(t for t in ds.video_targets(e.vid) if not set(t) & set(e.targets))
        gt_other = ds.read_masks(type(e)(e.vid, "", "", e.frames, other), frames.shape[1:3])
        oracle[_key(frames, e.text)] = gt
        wrong[_key(frames, e.text)] = gt_other
        gts.append(gt)
        others.append(gt_other)
    return oracle, wrong, gts, others


def _frac(flags) -> float:
    return float(np.mean(flags))


def test_oracle_wrong_entity_and_black_controls(synth, tmp_path):
    ds = RvosDataset(synth, "synthetic", "train")
    n = 12
    oracle, wrong, gts, others = _tables(ds, n)
    empty = [_frac(~g.any(axis=(1, 2))) for g in gts]  # share of frames where the target is out of view
    both_empty = [_frac(~g.any(axis=(1, 2)) & ~o.any(axis=(1, 2))) for g, o in zip(gts, others)]

    res = evaluate_rvos(ds, Lookup(oracle), out=str(tmp_path), limit=n, sheets=2)
    assert res["expressions"] == res["scored"] == n and res["skipped"]["total"] == 0
    assert res["model"]["overall"]["JF"] == 1.0
    assert all(v["JF"] == 1.0 for v in res["model"]["per_case"].values())
    # black frames: the oracle finds nothing, which is right exactly on the frames without the target
    assert res["black_frames"]["overall"]["J_mean"] == pytest.approx(np.mean(empty), abs=1e-12)
    assert res["black_frames"]["overall"]["F_mean"] == pytest.approx(np.mean(empty), abs=1e-12)
    # the oracle's masks against another entity: visible masks of two entities never share a pixel
    assert res["other_entity"]["overall"]["J_mean"] == pytest.approx(np.mean(both_empty), abs=1e-12)
    assert res["other_entity"]["overall"]["JF"] <= 0.3
    assert set(res["model"]["per_case"]) <= {"colour", "shape", "timing"}

    wrong_res = evaluate_rvos(ds, Lookup(wrong), limit=n, controls=False)
    assert wrong_res["model"]["overall"]["J_mean"] == pytest.approx(np.mean(both_empty), abs=1e-12)
    assert wrong_res["model"]["overall"]["JF"] <= 0.3
    assert set(wrong_res) == {"model", "expressions", "scored", "per_expression", "skipped"}

    # submission layout: OUT/submission/VID/EXP_ID/FRAME.png, 0 / 255, equal to the prediction
    e = ds.expressions[0]
    folder = os.path.join(tmp_path, "submission", e.vid, e.exp_id)
    assert sorted(os.listdir(folder)) == [f + ".png" for f in e.frames]
    got = np.stack([np.asarray(Image.open(os.path.join(folder, f + ".png"))) for f in e.frames])
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 255}
    assert ((got == 255) == gts[0]).all()
    assert len(os.listdir(os.path.join(tmp_path, "sheets"))) == 2


def test_bad_frame_is_a_counted_skip_and_bad_predictor_one_error(synth, tmp_path):
    import shutil

    root = str(tmp_path / "set")
    shutil.copytree(os.path.join(synth, "rvos"), os.path.join(root, "rvos"))
    ds = RvosDataset(root, "synthetic", "train")
    e = ds.expressions[0]
    os.remove(ds.frame_path(e, 3))
    res = evaluate_rvos(ds, lambda f, t: np.zeros(f.shape[:3], bool), limit=6, controls=False)
    n_vid = sum(x.vid == e.vid for x in ds.expressions[:6])
    assert res["skipped"]["by_reason"] == {"missing_file": n_vid} and res["scored"] == 6 - n_vid
    assert ds.frame_path(e, 3) in res["skipped"]["examples"][0]["message"]
    with pytest.raises(InputError, match=r"shape \(2, 2\)"):
        evaluate_rvos(ds, lambda f, t: np.zeros((2, 2), bool), limit=8, controls=False)


H, W = 6, 8


def _revos(root: str) -> list[np.ndarray]:
    """A ReVOS split: one video "LV/v1" of 4 frames; expressions referring (anno 1), reasoning (anno 2), no target."""
    names = [f"{i:05d}" for i in range(4)]
    os.makedirs(os.path.join(root, "JPEGImages", "LV", "v1"))
    for i, n in enumerate(names):
        Image.fromarray(np.full((H, W, 3), 30 * i, np.uint8)).save(os.path.join(root, "JPEGImages", "LV", "v1",
                                                                                n + ".jpg"))
    a = np.zeros((4, H, W), bool)
    a[:, 0:3, 0:3] = True
    b = np.zeros((4, H, W), bool)
    b[1:3, 3:6, 4:8] = True  # absent on frames 0 and 3
    json.dump({"videos": {"LV/v1": {"frames": names, "expressions": {
        "0": {"exp": "the box", "anno_id": [1], "type_id": 0},
        "1": {"exp": "what moves?", "anno_id": [2], "type_id": 1},
        "2": {"exp": "the dog", "anno_id": [], "type_id": 2}}}}},
        open(os.path.join(root, "meta_expressions_valid_.json"), "w"))
    json.dump({"1": [coco_rle_encode(m) for m in a], "2": [coco_rle_encode(m) if m.any() else None for m in b]},
              open(os.path.join(root, "mask_dict.json"), "w"))
    return [a, b]


def test_revos_official_overall_and_splits(tmp_path):
    a, b = _revos(str(tmp_path))
    ds = RvosDataset(str(tmp_path), "revos")
    # perfect on the referring expression, nothing predicted on the others
    res = evaluate_rvos(ds, lambda f, t: a if t == "the box" else np.zeros(f.shape[:3], bool), controls=False)
    cases = res["model"]["per_case"]
    assert cases["referring"]["JF"] == 1.0
    # reasoning: empty prediction is right on frames 0 and 3 only (J = F = 1 there, 0 elsewhere)
    assert cases["reasoning"]["J_mean"] == 0.5 and cases["reasoning"]["F_mean"] == 0.5
    assert cases["no_target"]["JF"] == 1.0
    assert res["model"]["revos_overall"]["JF"] == 0.75  # (1.0 + 0.5) / 2, no_target left out as VISA does
    assert res["model"]["overall"]["JF"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)


def _args(**kw):
    base = dict(ckpt="unused", data=None, format="synthetic", split=None, out=None, limit=None, sheets=0,
                no_controls=False)
    return argparse.Namespace(**{**base, **kw})


def test_run_rvos_prints_model_beside_controls(synth, tmp_path, capsys):
    ds = RvosDataset(synth, "synthetic", "test")
    oracle = _tables(ds, len(ds.expressions))[0]
    out = str(tmp_path / "out")
    res = run_rvos(_args(data=synth, out=out), predictor=Lookup(oracle))
    text = capsys.readouterr().out
    assert "rvos synthetic/test model: J&F 1.000" in text and "black_frames" in text and "other_entity" in text
    saved = json.load(open(os.path.join(out, "rvos_metrics.json")))
    assert saved["model"]["overall"]["JF"] == 1.0 == res["model"]["overall"]["JF"]
    assert os.path.isfile(os.path.join(out, "rvos_jf_per_kind.png"))


def test_refytvos_valid_writes_the_server_layout(tmp_path, capsys):
    names = ["00000", "00005"]
    d = tmp_path / "valid" / "JPEGImages" / "v9"
    d.mkdir(parents=True)
    for n in names:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / f"{n}.jpg")
    (tmp_path / "meta_expressions" / "valid").mkdir(parents=True)
    # the competition's valid file also lists its test videos ("t1"), which the valid split leaves out
    json.dump({"videos": {"v9": {"frames": names, "expressions": {"0": {"exp": "a cat", "obj_id": "1"}}},
                          "t1": {"frames": names, "expressions": {"0": {"exp": "a dog", "obj_id": "1"}}}}},
              open(tmp_path / "meta_expressions" / "valid" / "meta_expressions.json", "w"))
    (tmp_path / "meta_expressions" / "test").mkdir()
    json.dump({"videos": {"t1": {"frames": names, "expressions": {"0": {"exp": "a dog"}}}}},
              open(tmp_path / "meta_expressions" / "test" / "meta_expressions.json", "w"))
    out = str(tmp_path / "out")
    res = run_rvos(_args(data=str(tmp_path), format="refytvos", out=out),
                   predictor=lambda f, t: np.ones(f.shape[:3], bool))
    assert "model" not in res and res["expressions"] == 1
    assert "no ground truth" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(out, "submission", "Annotations", "v9", "0"))) == ["00000.png", "00005.png"]
    assert os.listdir(os.path.join(out, "submission", "Annotations")) == ["v9"]


@pytest.mark.parametrize("config, expect", [
    (None, "does not exist"),
    ({}, "no readable stvl_config.json"),
    ({"format": "stvl-jax/sam2", "family": "sam2_video"}, "holds a sam2_video model, not VIRST"),
    ({"format": "stvl-jax/qwen-vl"}, "holds a stvl-jax/qwen-vl model, not VIRST"),
])
def test_non_virst_checkpoint_is_one_line(synth, tmp_path, capsys, config, expect):
    from stvl_jax.cli import main

    ckpt = tmp_path / "ckpt"
    if config is not None:
        ckpt.mkdir()
        if config:
            (ckpt / "stvl_config.json").write_text(json.dumps(config))
    code = main(["eval", "rvos", "--ckpt", str(ckpt), "--data", synth, "--format", "synthetic",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expect in err[0] and str(ckpt) in err[0]


def test_cli_scores_a_predictions_folder(synth, tmp_path, capsys):
    """`stvl eval rvos --predictions DIR`: the oracle's submission scores 1.0; a missing or misshapen PNG is a
    counted skip naming it."""
    from stvl_jax.cli import main

    ds = RvosDataset(synth, "synthetic", "test")
    first = evaluate_rvos(ds, Lookup(_tables(ds, len(ds.expressions))[0]), out=str(tmp_path / "run"), controls=False)
    sub = str(tmp_path / "run" / "submission")
    argv = ["eval", "rvos", "--predictions", sub, "--data", synth, "--format", "synthetic", "--sheets", "1"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "rvos synthetic/test model: J&F 1.000" in out and "other_entity" in out and "black_frames" not in out
    saved = json.load(open(tmp_path / "a" / "rvos_metrics.json"))
    assert saved["scored"] == first["scored"] == len(ds.expressions) and saved["model"]["overall"]["JF"] == 1.0
    assert len(os.listdir(tmp_path / "a" / "sheets")) == 1

    e0, e1 = ds.expressions[0], ds.expressions[-1]
    os.remove(os.path.join(sub, e0.vid, e0.exp_id, e0.frames[2] + ".png"))
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(os.path.join(sub, e1.vid, e1.exp_id, e1.frames[0] + ".png"))
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    saved = json.load(open(tmp_path / "b" / "rvos_metrics.json"))
    assert saved["skipped"]["by_reason"] == {"missing_prediction": 1, "bad_prediction": 1}
    assert e0.frames[2] + ".png" in saved["skipped"]["examples"][0]["message"]
    assert saved["model"]["overall"]["JF"] == 1.0 and saved["scored"] == len(ds.expressions) - 2

    with pytest.raises(SystemExit) as e:  # one or the other (argparse's usage error)
        main([*argv, "--out", str(tmp_path / "c"), "--ckpt", "x"])
    assert e.value.code == 2 and "not allowed with argument --predictions" in capsys.readouterr().err
    assert main(["eval", "rvos", "--predictions", str(tmp_path / "nope"), "--data", synth, "--format", "synthetic",
                 "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "not a directory" in err[0]
