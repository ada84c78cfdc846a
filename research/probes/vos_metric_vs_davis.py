"""Probe: `stvl_jax.eval.vos_metrics` against the official DAVIS 2017 evaluation code on random masks.

The official code (github.com/davisvideochallenge/davis2017-evaluation: davis2017/metrics.py `db_eval_iou`,
`f_measure`; davis2017/utils.py `db_statistics`) is read at run time from a local copy — a checkout
(`--davis DIR`, the folder holding davis2017/) or a git directory without a work tree (`--davis-git GITDIR`,
read with `git show REV:path`) — and is never copied into this repository. Not a CI test.

Its dependencies that this venv lacks are stood in for by documented equivalents, printed in the report:
`cv2.dilate(img, kernel)` on a 0/1 image with a symmetric kernel = `scipy.ndimage.binary_dilation` with that
structuring element (zero border: OpenCV's default border for dilation never adds foreground), and
`skimage.morphology.disk(r)` = skimage's definition `(X**2 + Y**2 <= r**2)` on the (2r+1)^2 grid. PIL and
davis2017.davis are imported by utils.py only for file IO and are stubbed.

Masks: per case a random frame size (4..160 px a side, a few of DAVIS's 480x854), the ground truth one of
{empty, full, random rectangles/ellipses, salt noise} and the prediction one of {empty, equal, shifted by a few
pixels, eroded/dilated, an independent random mask, the ground truth with flipped pixels}.

    python -m research.probes.vos_metric_vs_davis \
        --davis-git /work/.mirror/davisvideochallenge+davis2017-evaluation/repo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
import warnings

import numpy as np

FILES = ("davis2017/metrics.py", "davis2017/utils.py")


def _read_sources(args) -> dict[str, str]:
    out = {}
    for f in FILES:
        if args.davis:
            with open(f"{args.davis}/{f}") as fh:
                out[f] = fh.read()
        else:
            out[f] = subprocess.run(["git", f"--git-dir={args.davis_git}", "show", f"{args.rev}:{f}"],
                                    check=True, capture_output=True, text=True).stdout
    return out


def _install_shims() -> list[str]:
    """Stand-ins for modules absent from the venv (see the module docstring); returns what was shimmed."""
    import scipy.ndimage as ndi

    shimmed = []
    try:
        import cv2  # noqa: F401
    except ImportError:
        cv2 = types.ModuleType("cv2")
        cv2.dilate = lambda img, kernel: ndi.binary_dilation(
            np.asarray(img) > 0, structure=np.asarray(kernel) > 0).astype(np.uint8)
        sys.modules["cv2"] = cv2
        shimmed.append("cv2.dilate -> scipy.ndimage.binary_dilation")
    try:
        from skimage.morphology import disk  # noqa: F401
    except ImportError:
        def disk(radius, dtype=np.uint8):
            grid = np.arange(-radius, radius + 1)
            X, Y = np.meshgrid(grid, grid)
            return np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=dtype)

        sk, morph = types.ModuleType("skimage"), types.ModuleType("skimage.morphology")
        morph.disk, sk.morphology = disk, morph
        sys.modules["skimage"], sys.modules["skimage.morphology"] = sk, morph
        shimmed.append("skimage.morphology.disk -> X**2 + Y**2 <= r**2")
    for name in ("PIL", "PIL.Image"):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
                shimmed.append(f"{name} (unused stub)")
    sys.modules["PIL"].Image = sys.modules["PIL.Image"]
    return shimmed


def load_official(args) -> tuple[types.ModuleType, types.ModuleType, list[str]]:
    shimmed = _install_shims()
    src = _read_sources(args)
    pkg = types.ModuleType("davis2017")
    pkg.__path__ = []
    davis_stub = types.ModuleType("davis2017.davis")
    davis_stub.DAVIS = None
    sys.modules.update({"davis2017": pkg, "davis2017.davis": davis_stub})
    mods = []
    for f in FILES:
        m = types.ModuleType(f[:-3].replace("/", "."))
        exec(compile(src[f], f"official:{f}", "exec"), m.__dict__)
        mods.append(m)
    return mods[0], mods[1], shimmed


def _random_shape(rng, h, w) -> np.ndarray:
    m = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.5, max(1.0, h / 3)), rng.uniform(0.5, max(1.0, w / 3))
        if rng.random() < 0.5:
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m |= (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    return m


def _gt(rng, h, w) -> np.ndarray:
    kind = rng.choice(["empty", "full", "shape", "shape", "shape", "noise"])
    if kind == "empty":
        return np.zeros((h, w), bool)
    if kind == "full":
        return np.ones((h, w), bool)
    if kind == "noise":
        return rng.random((h, w)) < rng.uniform(0.01, 0.5)
    return _random_shape(rng, h, w)


def _pred(rng, gt) -> np.ndarray:
    import scipy.ndimage as ndi

    h, w = gt.shape
    kind = rng.choice(["empty", "equal", "shift", "shift", "morph", "other", "flip"])
    if kind == "empty":
        return np.zeros_like(gt)
    if kind == "equal":
        return gt.copy()
    if kind == "shift":
        dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
        out = np.zeros_like(gt)
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = gt[max(-dy, 0):h + min(-dy, 0),
                                                                        max(-dx, 0):w + min(-dx, 0)]
        return out
    if kind == "morph":
        it = int(rng.integers(1, 4))
        return ndi.binary_dilation(gt, iterations=it) if rng.random() < 0.5 else ndi.binary_erosion(gt, iterations=it)
    if kind == "other":
        return _random_shape(rng, h, w)
    return gt ^ (rng.random(gt.shape) < rng.uniform(0.001, 0.05))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--davis", help="folder holding davis2017/metrics.py and davis2017/utils.py")
    src.add_argument("--davis-git", help="a git directory of davis2017-evaluation (read with git show)")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from stvl_jax.eval import vos_metrics as ours

    metrics, utils, shimmed = load_official(args)
    warnings.simplefilter("ignore", RuntimeWarning)  # the official code divides 0/0 before replacing it
    rng = np.random.default_rng(args.seed)
    worst = {"J": 0.0, "F": 0.0, "F_bound_th_px": 0.0, "mean": 0.0, "recall": 0.0, "decay": 0.0}
    kinds = {"both_empty": 0, "one_empty": 0, "full_frame": 0}
    t0 = time.time()
    for _ in range(args.cases):
        if rng.random() < 0.05:
            h, w = 480, 854
        else:
            h, w = (int(v) for v in rng.integers(4, 161, size=2))
        gt = _gt(rng, h, w)
        pred = _pred(rng, gt)
        kinds["both_empty"] += int(not gt.any() and not pred.any())
        kinds["one_empty"] += int(gt.any() != pred.any())
        kinds["full_frame"] += int(gt.all() or pred.all())
        j_ref = float(metrics.db_eval_iou(gt, pred))
        worst["J"] = max(worst["J"], abs(j_ref - float(ours.region_similarity(gt, pred))))
        worst["F"] = max(worst["F"], abs(float(metrics.f_measure(pred, gt)) - ours.boundary_f(gt, pred)))
        th = int(rng.integers(1, 6))  # bound_th >= 1: a radius in pixels
        worst["F_bound_th_px"] = max(worst["F_bound_th_px"], abs(float(metrics.f_measure(pred, gt, bound_th=th))
                                                                 - ours.boundary_f(gt, pred, bound_th=th)))
    # Per-object statistics on random per-frame score sequences, half of them with NaN frames. DAVIS's recall
    # is nanmean(v > 0.5), and NaN > 0.5 is False: a NaN frame counts as a miss. Here NaN marks an unscored
    # frame and is left out; the probe reports that difference separately (it never arises without NaN).
    worst["recall_nan_frames_documented_deviation"] = 0.0
    for i in range(args.cases):
        n = int(rng.integers(1, 120))
        v = rng.random(n)
        with_nan = i % 2 == 1
        if with_nan:
            v[rng.random(n) < 0.1] = np.nan
            if np.isnan(v).all():
                continue
        M, O, D = utils.db_statistics(v)
        s = ours.db_statistics(v)
        for key, ref in (("mean", M), ("recall", O), ("decay", D)):
            a, b = float(ref), s[key]
            if key == "recall" and with_nan and np.isnan(v).any():
                key = "recall_nan_frames_documented_deviation"
            if np.isnan(a) or np.isnan(b):
                worst[key] = max(worst[key], 0.0 if np.isnan(a) and np.isnan(b) else np.inf)
            else:
                worst[key] = max(worst[key], abs(a - b))
    report = {"cases": args.cases, "seed": args.seed, "max_abs_diff": worst, "special_cases": kinds,
              "shimmed": shimmed, "seconds": round(time.time() - t0, 1),
              "source": args.davis or f"{args.davis_git}@{args.rev}"}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
