"""J / F / J&F on hand-computed cases (DAVIS 2017 definitions; every expected value is derived in the comments)."""

import math

import numpy as np
import pytest

from stvl_jax.errors import InputError
from stvl_jax.eval.vos_metrics import (
    aggregate, boundary_f, boundary_precision_recall, db_statistics, disk_offsets, region_similarity, score_clip,
    score_object, seg2bmap, skip_first_and_last, tolerance_radius,
)


def _box(h, w, y0, y1, x0, x1):
    """(h, w) mask with rows y0..y1 and columns x0..x1 (inclusive) set."""
    m = np.zeros((h, w), bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


def _pixels(m):
    return {(int(y), int(x)) for y, x in zip(*np.nonzero(m))}


def test_empty_on_both_sides_is_perfect():
    # DAVIS: union 0 -> J = 1; no boundary on either side -> P = R = 1 -> F = 1.
    z = np.zeros((5, 5), bool)
    assert region_similarity(z, z) == 1.0
    assert boundary_precision_recall(z, z) == (1.0, 1.0)
    assert boundary_f(z, z) == 1.0


def test_one_side_empty_scores_zero():
    m = _box(8, 8, 2, 3, 2, 3)
    z = np.zeros_like(m)
    # J = 0 / 4 either way.
    assert region_similarity(m, z) == 0.0 and region_similarity(z, m) == 0.0
    # prediction empty, ground truth not: P = 1 (nothing predicted is wrong), R = 0 -> F = 0
    assert boundary_precision_recall(m, z) == (1.0, 0.0) and boundary_f(m, z) == 0.0
    # ground truth empty, prediction not: P = 0, R = 1 -> F = 0
    assert boundary_precision_recall(z, m) == (0.0, 1.0) and boundary_f(z, m) == 0.0


def test_seg2bmap_marks_the_ring_half_a_pixel_towards_the_origin():
    # A 2x2 square at rows/cols 2..3: a pixel is on the boundary when it differs from its right, bottom or
    # bottom-right neighbour -> the 3x3 ring rows 1..3, cols 1..3 without its centre (2, 2): 8 pixels.
    b = seg2bmap(_box(8, 8, 2, 3, 2, 3))
    assert _pixels(b) == {(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2), (3, 3)}
    # A mask filling the frame has no boundary: the frame border is not an object boundary.
    assert not seg2bmap(np.ones((6, 7), bool)).any()
    # Touching the right/bottom border: last column compares only downwards, last row only to the right.
    # Rows 2..3 x cols 3..4 of a 4x5 frame: ring pixels (1,2),(1,3),(1,4),(2,2),(3,2); (2,4),(3,4) are in the
    # last column and equal to the pixel below or are in the last row -> (2,4): seg 1, below (3,4) 1 -> no;
    # (3,4) is the bottom-right corner -> never; (3,3): last row, right neighbour (3,4) is 1 -> no.
    b = seg2bmap(_box(4, 5, 2, 3, 3, 4))
    assert _pixels(b) == {(1, 2), (1, 3), (1, 4), (2, 2), (3, 2)}


def test_full_frame_masks_agree():
    # Both masks fill the frame: J = 1, and both boundaries are empty -> F = 1.
    m = np.ones((10, 12), bool)
    assert region_similarity(m, m) == 1.0 and boundary_f(m, m) == 1.0


def test_one_pixel_shift():
    gt = _box(8, 8, 2, 3, 2, 3)
    pred = _box(8, 8, 2, 3, 3, 4)  # moved one column right
    # J: intersection = column 3 of rows 2..3 = 2 px; union = 4 + 4 - 2 = 6 -> 1/3.
    assert region_similarity(gt, pred) == pytest.approx(1 / 3, abs=1e-12)
    # 8x8 frame: diagonal 11.31 px * 0.008 = 0.09 -> radius ceil = 1 (a plus-shaped disk).
    assert tolerance_radius((8, 8)) == 1
    # gt ring {(1,1),(1,2),(1,3),(2,1),(2,3),(3,1),(3,2),(3,3)}; pred ring is the same shifted one column
    # right {(1,2),(1,3),(1,4),(2,2),(2,4),(3,2),(3,3),(3,4)}. Every pred ring pixel is in the gt ring or
    # 4-adjacent to one ((1,4)~(1,3), (2,2)~(1,2), (2,4)~(2,3), (3,4)~(3,3)) and vice versa -> P = R = F = 1.
    assert boundary_precision_recall(gt, pred) == (1.0, 1.0)
    # Exact matching (bound_th = 0 -> radius 0): common ring pixels (1,2),(1,3),(3,2),(3,3) = 4 of 8 each side
    # -> P = R = 0.5 -> F = 0.5.
    assert boundary_precision_recall(gt, pred, bound_th=0) == (0.5, 0.5)
    assert boundary_f(gt, pred, bound_th=0) == 0.5


def test_disk_is_round_not_square():
    # radius 1 = centre + 4 neighbours; radius 2 = 13 offsets (0,0), 4x (0,+-1)-type, 4x (0,+-2)-type,
    # 4x (+-1,+-1); (1,2) has 1 + 4 = 5 > 4 and is outside.
    assert len(disk_offsets(1)) == 5 and len(disk_offsets(2)) == 13
    assert (1, 1) not in {tuple(o) for o in disk_offsets(1)}
    assert (1, 2) not in {tuple(o) for o in disk_offsets(2)} and (1, 1) in {tuple(o) for o in disk_offsets(2)}
    # Single pixel at (3,3) vs (4,4): boundaries are the 2x2 blocks {(2,2),(2,3),(3,2),(3,3)} and
    # {(3,3),(3,4),(4,3),(4,4)}. Radius 1 (plus disk): pred (4,4) has no gt pixel among its 4 neighbours,
    # the other 3 match -> P = 3/4; gt (2,2) likewise unmatched -> R = 3/4 -> F = 3/4. A 3x3 square
    # structuring element would give 1. Radius 2: offset (1,1) is inside -> F = 1. J = 0 (no overlap).
    gt, pred = _box(8, 8, 3, 3, 3, 3), _box(8, 8, 4, 4, 4, 4)
    assert region_similarity(gt, pred) == 0.0
    assert boundary_precision_recall(gt, pred, bound_th=1) == (0.75, 0.75)
    assert boundary_f(gt, pred, bound_th=1) == pytest.approx(0.75, abs=1e-12)
    assert boundary_f(gt, pred, bound_th=2) == 1.0


def test_tolerance_radius_boundary():
    # radius = ceil(0.008 * hypot(H, W)): 128x128 -> 1.448 -> 2; DAVIS 480x854 -> 7.84 -> 8; 88x88 -> 0.9956 -> 1,
    # 89x89 -> 1.0070 -> 2; bound_th >= 1 is taken as pixels.
    assert tolerance_radius((128, 128)) == 2
    assert tolerance_radius((480, 854)) == 8
    assert tolerance_radius((88, 88)) == 1 and tolerance_radius((89, 89)) == 2
    assert tolerance_radius((10, 10), bound_th=3) == 3
    # 8x8 square rows/cols 4..11 in a 20x20 frame; its ring is rows/cols 3..11 (9x9 ring, 32 px).
    gt = _box(20, 20, 4, 11, 4, 11)
    # Shift by d = 2 columns with radius 2: every pred ring pixel is <= 2 px from the gt ring along a row
    # (offset (0, 2) is in the disk) -> P = R = 1.
    assert boundary_f(gt, _box(20, 20, 4, 11, 6, 13), bound_th=2) == 1.0
    # Shift by d = 3 with radius 2: pred ring = rows 3..11, cols 6..14. Unmatched pred pixels: its right column
    # (y, 14), y = 3..11 (9 px, nearest gt pixel (y, 11) is 3 away); its left column (y, 6) for y = 6, 7, 8
    # (3 px: gt column 3 is 3 away, gt rows 3 and 11 are >= 3 away); (4,6),(5,6) match row 3 at distance 1, 2,
    # (9,6),(10,6) match row 11. Top/bottom rows cols 6..13 match. -> 32 - 12 = 20 matched -> P = 20/32. By
    # symmetry (gt is pred shifted 3 left) R = 20/32 -> F = 0.625.
    pred = _box(20, 20, 4, 11, 7, 14)
    assert boundary_precision_recall(gt, pred, bound_th=2) == (0.625, 0.625)
    # The same shift with radius 3 matches everything.
    assert boundary_f(gt, pred, bound_th=3) == 1.0


def test_db_statistics_by_hand():
    # [1, 1, 0, 0]: mean 0.5; recall = share > 0.5 = 2/4; bin edges round(linspace(1, 4, 5)) - 1 =
    # round(1, 1.75, 2.5, 3.25, 4) - 1 = (0, 1, 2, 2, 3) (2.5 rounds up via +1e-10); first bin v[0:2] = [1, 1],
    # last bin v[2:4] = [0, 0] -> decay 1.
    assert db_statistics([1, 1, 0, 0]) == {"mean": 0.5, "recall": 0.5, "decay": 1.0}
    # 8 frames [1, 1, 1, 1, .5, .5, 0, 0]: edges round(1, 2.75, 4.5, 6.25, 8) - 1 = (0, 2, 4, 5, 7);
    # first bin v[0:3] mean 1; last bin v[5:8] = [.5, 0, 0] mean 1/6 -> decay 5/6; mean 5/8; recall 4/8
    # (0.5 is not > 0.5).
    s = db_statistics([1, 1, 1, 1, .5, .5, 0, 0])
    assert s["mean"] == 0.625 and s["recall"] == 0.5 and s["decay"] == pytest.approx(5 / 6, abs=1e-12)
    # One frame: every bin is that frame -> decay 0. NaN frames are ignored; all-NaN is NaN.
    assert db_statistics([0.3]) == {"mean": 0.3, "recall": 0.0, "decay": 0.0}
    assert db_statistics([1.0, math.nan, 0.0, 1.0])["mean"] == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(db_statistics([math.nan])["mean"])


def test_score_object_and_aggregate_by_case():
    gt = np.stack([_box(8, 8, 2, 3, 2, 3)] * 3)
    pred = np.stack([np.zeros((8, 8), bool), _box(8, 8, 2, 3, 2, 3), _box(8, 8, 2, 3, 3, 4)])
    # Frame 0 (the prompted one) is not scored. Frame 1 exact: J = F = 1. Frame 2 the one-pixel shift:
    # J = 1/3, F = 1 (radius 1). J_mean = 2/3, F_mean = 1, JF = 5/6; J recall = 1/2 (1/3 <= 0.5).
    a = score_object(gt, pred, scored=[False, True, True])
    assert math.isnan(a["J"][0]) and a["J"][1:] == pytest.approx([1, 1 / 3], abs=1e-12)
    assert a["F"][1:] == [1.0, 1.0] and a["num_scored"] == 2
    assert a["J_mean"] == pytest.approx(2 / 3, abs=1e-12) and a["F_mean"] == 1.0
    assert a["JF"] == pytest.approx(5 / 6, abs=1e-12) and a["J_recall"] == 0.5
    # Scored everywhere, frame 0 (pred empty vs gt square) gives J = F = 0.
    b = score_object(gt, pred)
    assert b["J"][0] == 0.0 and b["F"][0] == 0.0 and b["J_mean"] == pytest.approx(4 / 9, abs=1e-12)
    a["cases"], b["cases"] = ["late_entry"], ["late_entry", "twin"]
    s = aggregate([a, b])
    # Overall J-Mean = (2/3 + 4/9) / 2 = 5/9; F-Mean = (1 + 2/3) / 2 = 5/6; J&F = (5/9 + 5/6) / 2 = 25/36.
    assert s["overall"]["count"] == 2
    assert s["overall"]["J_mean"] == pytest.approx(5 / 9, abs=1e-12)
    assert s["overall"]["JF"] == pytest.approx(25 / 36, abs=1e-12)
    assert s["per_case"]["late_entry"]["count"] == 2 and s["per_case"]["twin"]["count"] == 1
    assert s["per_case"]["twin"]["J_mean"] == pytest.approx(4 / 9, abs=1e-12)
    # Per-frame curve: frame 0 only object b (0), frame 1 both 1, frame 2 both 1/3.
    assert s["J_per_frame"] == pytest.approx([0, 1, 1 / 3], abs=1e-12)


def test_skip_first_and_last_and_bad_shapes():
    assert skip_first_and_last(4).tolist() == [False, True, True, False]
    with pytest.raises(InputError, match="must be masks of one shape"):
        region_similarity(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="expects \\(T, H, W\\)"):
        score_object(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(InputError, match="scored must be"):
        score_object(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), scored=[True])


def test_score_clip_excludes_prompted_frames():
    gt = np.stack([_box(8, 8, 2, 3, 2, 3)] * 3)
    pred = np.stack([np.zeros((8, 8), bool), _box(8, 8, 2, 3, 2, 3), _box(8, 8, 2, 3, 3, 4)])
    # Object 0 prompted on frame 0 (left out): J = (1 + 1/3) / 2 = 2/3 as in the single-object case; object 1 is
    # object 0's masks with nothing left out: J = (0 + 1 + 1/3) / 3 = 4/9.
    res = score_clip(np.stack([gt, gt]), np.stack([pred, pred]), [["twin"], []],
                     exclude=[[True, False, False], [False, False, False]])
    assert res[0]["J_mean"] == pytest.approx(2 / 3, abs=1e-12) and res[0]["cases"] == ["twin"]
    assert res[1]["J_mean"] == pytest.approx(4 / 9, abs=1e-12) and res[1]["num_scored"] == 3
    assert sorted(aggregate(res)["per_case"]) == ["plain", "twin"]
    with pytest.raises(InputError, match="exclude must be"):
        score_clip(np.stack([gt]), np.stack([pred]), [[]], exclude=[[True]])
