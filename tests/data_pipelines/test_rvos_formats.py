"""Readers of the referring-segmentation layouts (MeViS, Ref-YouTube-VOS, ReVOS) on small fake sets built here in
each release's layout, and COCO's compressed RLE against pycocotools."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines.errors import AnnotationError, VideoDecodeError
from data_pipelines.formats.rvos import RvosDataset
from data_pipelines.rle import coco_counts_decode, coco_rle_decode, coco_rle_encode

H, W = 6, 8


def test_coco_rle_string_is_pycocotools():
    m = np.zeros((30, 30), bool)
    m[5:20, 3:9] = True
    # the string pycocotools.mask.encode gives for this mask (recorded from pycocotools 2.0)
    assert coco_rle_encode(m) == {"size": [30, 30], "counts": "o2??000000000ac0"}
    assert (coco_rle_decode({"size": [30, 30], "counts": "o2??000000000ac0"}) == m).all()
    mask = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(100):
        m = rng.random((rng.integers(1, 30), rng.integers(1, 30))) < rng.random()
        ref = mask.encode(np.asfortranarray(m.astype(np.uint8)))
        assert coco_rle_encode(m)["counts"] == ref["counts"].decode()
        assert (coco_rle_decode({"size": ref["size"], "counts": ref["counts"].decode()}) == m).all()


def test_coco_rle_refuses_garbage():
    with pytest.raises(ValueError, match="outside"):
        coco_counts_decode("ab\x01")
    with pytest.raises(ValueError, match="sum"):
        coco_rle_decode({"size": [3, 3], "counts": [2, 2]})


def _frames(d: str, vid: str, names, ext: str = ".jpg") -> None:
    os.makedirs(os.path.join(d, vid), exist_ok=True)
    for i, n in enumerate(names):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(os.path.join(d, vid, n + ext))


def _mask(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


A = [_mask(0, 2, 0, 3), None, _mask(1, 4, 2, 5)]  # anno "7": frame 1 empty
B = [_mask(4, 6, 5, 8), _mask(3, 6, 6, 8), None]  # anno "8"


def _rle(m):
    return None if m is None else coco_rle_encode(m)


def _mevis(root: str, split: str = "valid_u") -> str:
    d = os.path.join(root, split)
    names = ["00000", "00005", "00010"]
    _frames(os.path.join(d, "JPEGImages"), "vidA", names)
    meta = {"videos": {
        "vidA": {"vid_id": 0, "frames": list(reversed(names)), "expressions": {
            "0": {"exp": "the  Two fish", "obj_id": [0, 1], "anno_id": [7, 8]},
            "1": {"exp": "fish on the left", "obj_id": [0], "anno_id": ["7"]},
            "2": {"obj_id": [0], "anno_id": ["7"]},  # no text
            "3": {"exp": "ghost", "obj_id": [5], "anno_id": ["99"]},  # unknown anno
            "4": {"exp": "short", "obj_id": [2], "anno_id": ["9"]},  # 2 masks for 3 frames
        }},
        "vidB": {"frames": [], "expressions": {"0": {"exp": "x", "anno_id": ["7"]}}},  # no frames
        "vidC": {"expressions": {}},  # no frames field
    }}
    json.dump(meta, open(os.path.join(d, "meta_expressions.json"), "w"))
    json.dump({"7": [_rle(m) for m in A], "8": [_rle(m) for m in B], "9": [None, None]},
              open(os.path.join(d, "mask_dict.json"), "w"))
    return root


def _union(*seqs):
    return np.stack([np.any([s[i] for s in seqs if s[i] is not None] or [np.zeros((H, W), bool)], axis=0)
                     for i in range(3)])


def test_mevis_layout(tmp_path):
    ds = RvosDataset(_mevis(str(tmp_path)), "mevis")
    assert ds.split == "valid_u" and ds.has_masks
    assert [e.key for e in ds.expressions] == ["vidA/0", "vidA/1"]
    two, left = ds.expressions
    assert two.text == "the Two fish" and two.targets == ("7", "8") and two.kind == "referring"
    assert two.frames == ("00000", "00005", "00010")  # sorted, as the releases' readers do
    assert (ds.read_masks(two, (H, W)) == _union(A, B)).all()
    assert (ds.read_masks(left, (H, W), indices=[2, 0]) == _union(A)[[2, 0]]).all()
    frames = ds.read_frames(two)
    assert frames.shape == (3, H, W, 3) and abs(int(frames[2].mean()) - 80) <= 2
    assert ds.skipped == {"missing_field": 2, "unknown_anno_id": 1, "frame_count_mismatch": 1, "no_frames": 1}
    assert "anno_id '99'" in ds.first_skip["unknown_anno_id"] and "vidA" in ds.first_skip["unknown_anno_id"]
    assert ds.video_targets("vidA") == [("7", "8"), ("7",)]


def test_mevis_strict_and_missing_pieces(tmp_path):
    root = _mevis(str(tmp_path))
    with pytest.raises(AnnotationError, match=r"\[vidA\]\[2\]: expression without text"):
        RvosDataset(root, "mevis", strict=True)
    with pytest.raises(AnnotationError, match="meta_expressions.json.*not found|not found"):
        RvosDataset(root, "mevis", split="train")
    ds = RvosDataset(root, "mevis")
    os.remove(os.path.join(root, "valid_u", "JPEGImages", "vidA", "00005.jpg"))
    with pytest.raises(VideoDecodeError, match="00005.jpg"):
        ds.read_frames(ds.expressions[0])
    os.remove(os.path.join(root, "valid_u", "mask_dict.json"))  # the server-scored split: expressions only
    ds = RvosDataset(root, "mevis")
    assert not ds.has_masks and len(ds.expressions) == 4
    with pytest.raises(AnnotationError, match="no ground-truth masks"):
        ds.read_masks(ds.expressions[0], (H, W))


def test_bad_rle_is_named_when_read(tmp_path):
    root = _mevis(str(tmp_path))
    path = os.path.join(root, "valid_u", "mask_dict.json")
    md = json.load(open(path))
    md["7"][0] = {"size": [H, W], "counts": "!!"}
    json.dump(md, open(path, "w"))
    ds = RvosDataset(root, "mevis")
    with pytest.raises(AnnotationError, match="anno_id '7' frame 0: bad RLE") as e:
        ds.read_masks(ds.expressions[1], (H, W))
    assert e.value.reason == "bad_rle"


def test_refytvos_palette_pngs(tmp_path):
    root = str(tmp_path)
    names = ["00000", "00005"]
    _frames(os.path.join(root, "train", "JPEGImages"), "v1", names)
    ann = os.path.join(root, "train", "Annotations", "v1")
    os.makedirs(ann)
    labels = [np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)]
    labels[0][1:3, 1:4] = 1
    labels[0][4:6, 4:8] = 2
    labels[1][0:2, 5:8] = 2
    for n, lab in zip(names, labels):
        im = Image.fromarray(lab, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        im.save(os.path.join(ann, n + ".png"))
    os.makedirs(os.path.join(root, "meta_expressions", "train"))
    json.dump({"videos": {"v1": {"frames": names, "expressions": {
        "0": {"exp": "a red car", "obj_id": "1"}, "1": {"exp": "a green car", "obj_id": "2"},
        "2": {"exp": "bad", "obj_id": "x"}}}}},
        open(os.path.join(root, "meta_expressions", "train", "meta_expressions.json"), "w"))
    ds = RvosDataset(root, "refytvos", split="train")
    assert [e.targets for e in ds.expressions] == [("1",), ("2",)]
    assert ds.skipped == {"bad_field": 1}
    red, green = ds.expressions
    assert (ds.read_masks(red, (H, W)) == np.stack([lab == 1 for lab in labels])).all()
    assert (ds.read_masks(green, (H, W)) == np.stack([lab == 2 for lab in labels])).all()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(os.path.join(ann, "00005.png"))  # RGB, not a label map
    with pytest.raises(AnnotationError, match="mode RGB"):
        ds.read_masks(red, (H, W))


def test_revos_splits_and_nested_names(tmp_path):
    root = str(tmp_path)
    names = ["00000", "00001", "00002"]
    _frames(os.path.join(root, "JPEGImages"), "MOSE/abc", names)
    json.dump({"videos": {"MOSE/abc": {"frames": names, "expressions": {
        "0": {"exp": "the fish", "obj_id": [0], "anno_id": [7], "type_id": 0},
        "1": {"exp": "what would a cat chase?", "obj_id": [0, 1], "anno_id": [7, 8], "type_id": 1},
        "2": {"exp": "the elephant", "obj_id": [], "anno_id": [], "type_id": 2},
        "3": {"exp": "x", "obj_id": [0], "anno_id": [7], "type_id": 5},
    }}}}, open(os.path.join(root, "meta_expressions_valid_.json"), "w"))
    json.dump({"7": [_rle(m) for m in A], "8": [_rle(m) for m in B]}, open(os.path.join(root, "mask_dict.json"), "w"))
    ds = RvosDataset(root, "revos")
    assert [(e.key, e.kind) for e in ds.expressions] == [
        ("MOSE/abc/0", "referring"), ("MOSE/abc/1", "reasoning"), ("MOSE/abc/2", "no_target")]
    assert ds.skipped == {"bad_field": 1}
    assert (ds.read_masks(ds.expressions[1], (H, W)) == _union(A, B)).all()
    assert not ds.read_masks(ds.expressions[2], (H, W)).any()
    assert ds.read_frames(ds.expressions[0]).shape == (3, H, W, 3)


def test_unknown_format_and_bad_meta(tmp_path):
    with pytest.raises(AnnotationError, match="unknown referring-segmentation format"):
        RvosDataset(str(tmp_path), "davis")
    os.makedirs(tmp_path / "valid_u")
    (tmp_path / "valid_u" / "meta_expressions.json").write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="expected"):
        RvosDataset(str(tmp_path), "mevis")
    (tmp_path / "valid_u" / "meta_expressions.json").write_text("{")
    with pytest.raises(AnnotationError, match="not JSON"):
        RvosDataset(str(tmp_path), "mevis")
