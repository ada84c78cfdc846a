"""Video object segmentation metrics: J (region IoU), F (boundary F-measure) and J&F, DAVIS 2017 definitions.

Definitions (davisvideochallenge/davis2017-evaluation, davis2017/metrics.py + utils.py; SA-V's sav_benchmark uses
the same per-frame code):
- J = |G & P| / |G | P|, and 1 when both masks are empty.
- F: boundary maps by `seg2bmap` (a pixel is a boundary pixel when it differs from its right, bottom or
  bottom-right neighbour; the last row compares only to the right, the last column only downwards, the
  bottom-right pixel never is one, so the image border itself is never a boundary). Each map is dilated by a
  disk of radius `ceil(bound_th * hypot(H, W))` pixels (bound_th >= 1 is a radius in pixels); precision = share
  of predicted boundary pixels within the dilated ground-truth boundary, recall = the converse;
  F = 2PR / (P + R), 0 when P + R = 0. Empty boundaries: both empty -> P = R = 1 (F = 1); prediction empty only
  -> P = 1, R = 0 (F = 0); ground truth empty only -> P = 0, R = 1 (F = 0).
- Per object over its scored frames: mean, recall (share of frames > 0.5) and decay (mean of the first quarter
  of the frames minus mean of the last quarter, DAVIS's 4 overlapping bins); NaN frames are ignored.
- Global: J-Mean = mean over objects of their J mean (likewise F, recalls, decays); J&F = (J-Mean + F-Mean) / 2.

Pure numpy: the disk dilation is an OR of shifted copies (what cv2.dilate with skimage's disk computes).
Two documented departures from the DAVIS code, both outside what DAVIS itself feeds it: its decay bin indices
are cast to uint8, which wraps for sequences of more than 256 frames (plain integers here); its recall is
nanmean(v > 0.5), which counts a NaN frame as a miss, while here NaN marks an unscored frame and is left out
(research/probes/vos_metric_vs_davis.py compares the two on random masks and score sequences).
"""

from __future__ import annotations

import math

import numpy as np

from stvl_jax.errors import InputError

BOUND_TH = 0.008  # DAVIS 2017: boundary tolerance as a fraction of the image diagonal
RECALL_TH = 0.5  # DAVIS: a frame counts as recalled when its score is > 0.5
PLAIN = "plain"  # the case of an object that belongs to no other


def _pair(gt, pred, what: str) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim < 2:
        raise InputError(f"{what}: ground truth {gt.shape} and prediction {pred.shape} must be masks of one shape "
                         "(..., H, W)")
    return gt.astype(bool), pred.astype(bool)


def region_similarity(gt, pred) -> np.ndarray:
    """J per mask: gt, pred (..., H, W) bool -> (...) float64; 1.0 where both masks are empty."""
    gt, pred = _pair(gt, pred, "region_similarity")
    inter = (gt & pred).sum(axis=(-2, -1))
    union = (gt | pred).sum(axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def seg2bmap(mask) -> np.ndarray:
    """(H, W) mask -> (H, W) bool one-pixel-wide boundary map (the DAVIS / Berkeley `seg2bmap` convention)."""
    seg = np.asarray(mask).astype(bool)
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    # Outside the image counts as "same as me": the border of the frame is not an object boundary.
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def tolerance_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Matching radius in pixels: bound_th itself when >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk_offsets(radius: int) -> np.ndarray:
    """(K, 2) integer (dy, dx) offsets of the disk dy^2 + dx^2 <= radius^2 (skimage.morphology.disk)."""
    r = int(radius)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy * dy + dx * dx <= r * r
    return np.stack([dy[keep], dx[keep]], axis=1)


def dilate(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a (H, W) map by the disk of `radius` (pixels outside the image are background)."""
    bmap = np.asarray(bmap, dtype=bool)
    h, w = bmap.shape
    r = int(radius)
    padded = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    padded[r:r + h, r:r + w] = bmap
    out = np.zeros_like(bmap)
    for dy, dx in disk_offsets(r):
        out |= padded[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


def boundary_precision_recall(gt, pred, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """Boundary precision and recall of one (H, W) prediction against its ground truth (DAVIS conventions)."""
    gt, pred = _pair(gt, pred, "boundary_f")
    if gt.ndim != 2:
        raise InputError(f"boundary_f scores one frame at a time, got masks of shape {gt.shape}")
    gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_pred == 0 or n_gt == 0:
        # Empty boundary on one side: the side with nothing to match is perfect, the other side gets nothing.
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    r = tolerance_radius(gt.shape, bound_th)
    precision = (pred_b & dilate(gt_b, r)).sum() / n_pred
    recall = (gt_b & dilate(pred_b, r)).sum() / n_gt
    return float(precision), float(recall)


def boundary_f(gt, pred, bound_th: float = BOUND_TH) -> float:
    """F of one (H, W) frame: 2PR / (P + R), 0 when P + R = 0."""
    p, r = boundary_precision_recall(gt, pred, bound_th)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def db_statistics(values) -> dict:
    """Per-frame scores (T,) -> {"mean", "recall", "decay"} as DAVIS's `db_statistics` (NaN frames ignored)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or np.isnan(v).all():
        return {"mean": math.nan, "recall": math.nan, "decay": math.nan}
    ok = ~np.isnan(v)
    mean = float(v[ok].mean())
    recall = float((v[ok] > RECALL_TH).mean())
    # DAVIS: 5 bin edges spread over frame numbers 1..T; bin i spans edges i..i+1 inclusive (bins share edges).
    edges = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(int)
    bins = [v[edges[i]:edges[i + 1] + 1] for i in range(4)]
    first, last = bins[0][~np.isnan(bins[0])], bins[3][~np.isnan(bins[3])]
    decay = float(first.mean() - last.mean()) if first.size and last.size else math.nan
    return {"mean": mean, "recall": recall, "decay": decay}


def score_object(gt, pred, scored=None, bound_th: float = BOUND_TH) -> dict:
    """One object's masklet: gt, pred (T, H, W) -> per-frame J and F on the scored frames plus their statistics.

    `scored`: optional (T,) bool, the frames that count (e.g. all but the prompted ones, or DAVIS's
    skip-first-and-last); unscored frames are NaN in the per-frame lists and ignored by the statistics.
    Returns {"J": [T], "F": [T], "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay", "JF",
    "num_scored"}.
    """
    gt, pred = _pair(gt, pred, "score_object")
    if gt.ndim != 3:
        raise InputError(f"score_object expects (T, H, W) masklets, got {gt.shape}")
    t = gt.shape[0]
    keep = np.ones(t, bool) if scored is None else np.asarray(scored, dtype=bool)
    if keep.shape != (t,):
        raise InputError(f"score_object: scored must be ({t},) booleans, got shape {keep.shape}")
    j = np.full(t, np.nan)
    f = np.full(t, np.nan)
    j[keep] = region_similarity(gt[keep], pred[keep])
    for k in np.flatnonzero(keep):
        f[k] = boundary_f(gt[k], pred[k], bound_th)
    out = {"J": j.tolist(), "F": f.tolist(), "num_scored": int(keep.sum())}
    for name, vals in (("J", j), ("F", f)):
        for stat, x in db_statistics(vals).items():
            out[f"{name}_{stat}"] = x
    out["JF"] = (out["J_mean"] + out["F_mean"]) / 2
    return out


def score_clip(gt, pred, cases, exclude=None, bound_th: float = BOUND_TH) -> list[dict]:
    """All objects of a clip: gt, pred (O, T, H, W); cases [O] (labels per object); exclude (O, T) bool frames
    left out of the scores (e.g. each object's prompted frames) -> [O] `score_object` results with "cases"."""
    gt, pred = _pair(gt, pred, "score_clip")
    if gt.ndim != 4 or len(cases) != gt.shape[0]:
        raise InputError(f"score_clip expects (O, T, H, W) masks and O case lists, got {gt.shape} and {len(cases)}")
    skip = np.zeros(gt.shape[:2], bool) if exclude is None else np.asarray(exclude, bool)
    if skip.shape != gt.shape[:2]:
        raise InputError(f"score_clip: exclude must be {gt.shape[:2]} booleans, got shape {skip.shape}")
    return [{**score_object(gt[o], pred[o], ~skip[o], bound_th), "cases": list(cases[o])} for o in range(len(cases))]


def skip_first_and_last(num_frames: int) -> np.ndarray:
    """(T,) bool: DAVIS / SA-V semi-supervised convention, every frame but the first and the last."""
    keep = np.ones(num_frames, bool)
    keep[[0, -1]] = False
    return keep


_STATS = ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")


def _summary(objects: list[dict]) -> dict:
    out = {"count": len(objects)}
    for key in _STATS:
        vals = np.asarray([o[key] for o in objects], dtype=np.float64)
        ok = ~np.isnan(vals)
        out[key] = float(vals[ok].mean()) if ok.any() else math.nan
    out["JF"] = (out["J_mean"] + out["F_mean"]) / 2
    return out


def aggregate(objects: list[dict], case_key: str = "cases") -> dict:
    """Objects (each a `score_object` result plus `case_key`: a case name or a list of them) -> summary.

    Returns {"overall": {count, J_mean, ..., JF}, "per_case": {case: {...}}, "J_per_frame": [...],
    "F_per_frame": [...]}: an object counts in every case it belongs to (an empty list or a missing key: "plain");
    per-frame curves are the mean over
    objects at each frame index (objects of different lengths are NaN-padded, NaN frames ignored).
    """
    cases: dict[str, list[dict]] = {}
    for o in objects:
        names = o.get(case_key, ())
        for name in [names] if isinstance(names, str) else (names or [PLAIN]):
            cases.setdefault(name, []).append(o)
    out = {"overall": _summary(objects), "per_case": {c: _summary(v) for c, v in sorted(cases.items())}}
    length = max((len(o["J"]) for o in objects), default=0)
    for name in ("J", "F"):
        grid = np.full((len(objects), length), np.nan)
        for i, o in enumerate(objects):
            grid[i, :len(o[name])] = o[name]
        counts = (~np.isnan(grid)).sum(0)
        sums = np.nansum(grid, axis=0)
        out[f"{name}_per_frame"] = [float(s / c) if c else math.nan for s, c in zip(sums, counts)]
    return out
