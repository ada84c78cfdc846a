"""Referring video object segmentation evaluation (`stvl eval rvos`): J, F and J&F per expression, overall and per
split / query kind, beside the controls; masks written in the benchmark's submission layout; overlay sheets.

Scores are the DAVIS J and F of `vos_metrics` on every frame of the video (what MeViS's and ReVOS's official
scripts compute: per expression the mean over its frames, then the mean over expressions); the target of an
expression is the union of its objects' masks. Grouping (`per_case`): ReVOS `referring` / `reasoning` /
`no_target`; synthetic `colour` / `shape` / `timing`; MeViS and Ref-YouTube-VOS one `referring` group. ReVOS's
official overall is the mean of the referring and reasoning J&F (`revos_overall`; VISA's tools/eval_revos.py),
not the mean over all expressions (`overall`).

Controls, printed beside the model:
- `black_frames`: the same predictor on the video with every frame black (a score that stays up did not come
  from the video);
- `other_entity`: the model's masks scored against the target of another expression of the same video whose
  objects are disjoint from this one's (a predictor that segments "some object" rather than the referred one
  scores as high there).

Submission layout (one 8-bit PNG per frame per expression, 0 / 255, at the frame's size):
    mevis, revos, synthetic   OUT/submission/VID/EXP_ID/FRAME.png   (zip the folder's content for the server)
    refytvos                  OUT/submission/Annotations/VID/EXP_ID/FRAME.png

A predictor is `predict(frames (T, H, W, 3) uint8, expression: str) -> masks (T, H, W) bool`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from data_pipelines.errors import AnnotationError, VideoDecodeError
from data_pipelines.formats.rvos import RvosDataset, RvosExpression
from stvl_jax.errors import InputError
from stvl_jax.eval.skips import SkipReport
from stvl_jax.eval.vos_metrics import aggregate, score_object

Predictor = Callable[[np.ndarray, str], np.ndarray]
RUNS = ("model", "black_frames", "other_entity")
VIRST_FORMAT = "stvl-jax/virst"


def submission_dir(out: str, fmt: str, expr: RvosExpression) -> str:
    """The folder of one expression's PNG masks in the benchmark's submission layout (module docstring)."""
    base = os.path.join(out, "Annotations") if fmt == "refytvos" else out
    return os.path.join(base, expr.vid, expr.exp_id)


def write_masks(folder: str, frame_names, masks: np.ndarray) -> None:
    """masks (T, H, W) bool -> FOLDER/FRAME.png, mode L, 0 / 255."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for name, m in zip(frame_names, masks):
        Image.fromarray(np.where(m, 255, 0).astype(np.uint8), mode="L").save(os.path.join(folder, name + ".png"))


def read_submission(root: str, fmt: str, expr: RvosExpression, shape: tuple[int, int, int]) -> np.ndarray:
    """An expression's masks from a folder in the submission layout (any nonzero pixel is foreground, as the
    official scripts read them) -> (T, H, W) bool; a missing or misshapen PNG is an AnnotationError
    (`missing_prediction` / `bad_prediction`) naming it."""
    from PIL import Image, UnidentifiedImageError

    folder = submission_dir(root, fmt, expr)
    out = np.zeros(shape, bool)
    for i, name in enumerate(expr.frames):
        path = os.path.join(folder, name + ".png")
        if not os.path.isfile(path):
            raise AnnotationError("missing_prediction", "no predicted mask", path)
        try:
            with Image.open(path) as im:
                m = np.asarray(im.convert("L")) > 0
        except (OSError, UnidentifiedImageError) as e:
            raise AnnotationError("bad_prediction", f"not a readable PNG ({e})", path) from None
        if m.shape != shape[1:]:
            raise AnnotationError("bad_prediction", f"mask of size {m.shape}, the frames are {shape[1:]}", path)
        out[i] = m
    return out


def _predict(predict: Predictor, frames: np.ndarray, expr: RvosExpression) -> np.ndarray:
    pred = np.asarray(predict(frames, expr.text))
    if pred.shape != frames.shape[:3]:
        raise InputError(f"predictor returned masks of shape {pred.shape} for {expr.key} ({expr.text!r}); expected "
                         f"(T, H, W) = {frames.shape[:3]}")
    return pred.astype(bool)


def _other_target(ds: RvosDataset, expr: RvosExpression, cache: dict) -> tuple[str, ...] | None:
    """Targets of another expression of the video, sharing no object with this one's (None if there is none)."""
    if expr.vid not in cache:
        cache[expr.vid] = ds.video_targets(expr.vid)
    mine = set(expr.targets)
    return next((t for t in cache[expr.vid] if mine and not mine & set(t)), None)


def _scored(gt: np.ndarray, pred: np.ndarray, expr: RvosExpression) -> dict:
    s = score_object(gt, pred)
    return {"key": expr.key, "kind": expr.kind, "text": expr.text, "J": s["J"], "F": s["F"],
            **{k: s[k] for k in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay", "JF")}}


def revos_overall(summary: dict) -> dict | None:
    """ReVOS's official overall: the mean of the referring and reasoning J, F and J&F (None without both)."""
    cases = summary["per_case"]
    if "referring" not in cases or "reasoning" not in cases:
        return None
    out = {k: (cases["referring"][k] + cases["reasoning"][k]) / 2 for k in ("J_mean", "F_mean", "JF")}
    return {**out, "count": cases["referring"]["count"] + cases["reasoning"]["count"]}


def evaluate_rvos(ds: RvosDataset, predict: Predictor | None = None, *, predictions: str | None = None,
                  out: str | None = None, controls: bool = True, limit: int | None = None, sheets: int = 0,
                  progress=None) -> dict:
    """Run `predict` on the first `limit` expressions of `ds` (or read their masks from `predictions`, a folder in
    the submission layout); score them when the split has ground truth.

    out: the submission masks go to OUT/submission (module docstring; not with `predictions`) and `sheets`
    overlay contact sheets (the prediction in blue, the ground truth in orange) to OUT/sheets/. With
    `predictions` there is no black-frames control (nothing is run). Returns {"model", "black_frames",
    "other_entity": `vos_metrics.aggregate` summaries by kind (absent when nothing was scored), "expressions":
    predicted, "scored", "per_expression": [{key, kind, text, J_mean, F_mean, JF, ...}], "skipped"}.
    A frame or mask that cannot be read skips its expression (counted, with the reader's own skips).
    """
    from stvl_jax.infer.segment_outputs import write_contact_sheet

    if (predict is None) == (predictions is None):
        raise ValueError("evaluate_rvos: give a predictor or a predictions folder, not both or neither")

    skips = SkipReport()
    for reason, n in ds.skipped.items():  # the reader's skips, each reason with its first message
        skips.add(ds.paths["meta"], reason, ds.first_skip[reason])
        skips.by_reason[reason] += n - 1
    runs: dict[str, list[dict]] = {r: [] for r in RUNS}
    cache: dict = {}
    done, video = 0, (None, None)
    for expr in ds.expressions[:limit]:
        try:
            if video[0] != expr.vid:  # a video's expressions are consecutive: decode its frames once
                video = (None, None)
                video = (expr.vid, ds.read_frames(expr))
                video[1].flags.writeable = False  # shared by the video's expressions: no predictor may edit it
            frames = video[1]
            gt = ds.read_masks(expr, frames.shape[1:3]) if ds.has_masks else None
            other = _other_target(ds, expr, cache) if controls and gt is not None else None
            gt_other = ds.read_masks(RvosExpression(expr.vid, "", "", expr.frames, other), frames.shape[1:3]) \
                if other else None
            pred = read_submission(predictions, ds.format, expr, frames.shape[:3]) if predictions else None
        except (AnnotationError, VideoDecodeError) as e:
            skips.add_error(expr.key, e)
            continue
        if predictions is None:
            pred = _predict(predict, frames, expr)
            if out is not None:
                write_masks(submission_dir(os.path.join(out, "submission"), ds.format, expr), expr.frames, pred)
        if gt is not None:
            runs["model"].append(_scored(gt, pred, expr))
            if controls and predictions is None:
                runs["black_frames"].append(_scored(gt, _predict(predict, np.zeros_like(frames), expr), expr))
            if gt_other is not None:
                runs["other_entity"].append(_scored(gt_other, pred, expr))
            if out is not None and len(runs["model"]) <= sheets:
                name = f"{expr.vid}_{expr.exp_id}".replace("/", "_")
                write_contact_sheet(os.path.join(out, "sheets", name + ".png"), frames, np.stack([pred, gt], 1),
                                    None, labels=[f"{f}  {expr.text[:40]}" for f in expr.frames])
        done += 1
        if progress is not None:
            progress(done)
    res = {name: aggregate(objs, case_key="kind") for name, objs in runs.items() if objs}
    for name in list(res):
        for key in ("J_per_frame", "F_per_frame"):  # frame indices of different videos do not line up
            res[name].pop(key)
        if ds.format == "revos" and (official := revos_overall(res[name])):
            res[name]["revos_overall"] = official
    res["expressions"] = done
    res["scored"] = len(runs["model"])
    res["per_expression"] = [{k: v for k, v in o.items() if k not in ("J", "F")} for o in runs["model"]]
    res["skipped"] = skips.as_dict()
    return res


# ------------------------------------------------------------------------------------------------ CLI
def load_rvos_predictor(ckpt: str) -> Predictor:
    """The VIRST predictor of a checkpoint; any other checkpoint (or none) is one InputError naming it."""
    import json

    cfg = os.path.join(ckpt, "stvl_config.json")
    if not os.path.exists(ckpt):
        raise InputError(f"checkpoint {ckpt!r} does not exist")
    try:
        with open(cfg) as f:
            info = json.load(f)
        kind = info.get("family") or info.get("format") if isinstance(info, dict) else None
    except (OSError, json.JSONDecodeError):
        hf = os.path.isfile(os.path.join(ckpt, "config.json"))
        raise InputError(f"checkpoint {ckpt!r} is not a VIRST checkpoint (no readable stvl_config.json"
                         f"{'; a Hugging Face directory' if hf else ''}); stvl eval rvos needs one trained with "
                         "`stvl train configs/train/virst_tiny.yaml`") from None
    if info.get("format") != VIRST_FORMAT:
        raise InputError(f"checkpoint {ckpt!r} holds a {kind or 'unknown'} model, not VIRST; stvl eval rvos needs "
                         "a VIRST checkpoint (`stvl train configs/train/virst_tiny.yaml`)")
    try:
        import importlib

        load = importlib.import_module("stvl_jax.infer.virst").load_predictor
    except (ImportError, AttributeError):
        raise InputError(f"checkpoint {ckpt!r} is VIRST, but this build has no VIRST predictor "
                         "(stvl_jax.infer.virst.load_predictor)") from None
    return load(ckpt)


def _fmt(r: dict) -> str:
    o = r["overall"]
    return f"J&F {o['JF']:.3f} (J {o['J_mean']:.3f}, F {o['F_mean']:.3f})"


def run_rvos(args, predictor: Predictor | None = None) -> dict:
    """`stvl eval rvos`: the set first (a bad path or layout fails before the model loads), then the model (or
    the masks of `--predictions`)."""
    import json

    from stvl_jax.eval.vos_plots import plot_jf_per_case

    ds = RvosDataset(args.data, args.format, args.split)
    if not ds.expressions:
        detail = f" (skipped: {dict(ds.skipped)}; first: {next(iter(ds.first_skip.values()))})" if ds.skipped else ""
        raise InputError(f"no usable expression in {ds.paths['meta']}{detail}")
    predictions = getattr(args, "predictions", None)
    if predictions is not None and not os.path.isdir(predictions):
        raise InputError(f"--predictions {predictions!r} is not a directory (masks in the submission layout)")
    if predictions is None and predictor is None:
        predictor = load_rvos_predictor(args.ckpt)
    res = evaluate_rvos(ds, predictor, predictions=predictions, out=args.out, controls=not args.no_controls,
                        limit=args.limit, sheets=args.sheets,
                        progress=lambda n: print(f"\rrvos: {n} expressions", end="", flush=True))
    print()
    skipped = res["skipped"]
    if res["expressions"] == 0:
        raise InputError(f"no usable expression in {ds.paths['meta']}: all {skipped['total']} skipped "
                         f"({skipped['by_reason']}; first: {skipped['examples'][0]['message']})")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "rvos_metrics.json"), "w") as f:
        json.dump({"format": ds.format, "split": ds.split, **res}, f, indent=1)
    where = f"{ds.format}/{ds.split}"
    if "model" not in res:
        print(f"{where}: no ground truth in this split; {res['expressions']} expressions' masks written to "
              f"{os.path.join(args.out, 'submission')} for the benchmark server")
    else:
        plot_jf_per_case(res["model"], os.path.join(args.out, "rvos_jf_per_kind.png"), f"{where}: J / F / J&F")
        for name in RUNS:
            if name in res:
                kinds = ", ".join(f"{k} {v['JF']:.3f} ({v['count']})" for k, v in res[name]["per_case"].items())
                official = res[name].get("revos_overall")
                extra = f"; ReVOS overall (referring+reasoning)/2 J&F {official['JF']:.3f}" if official else ""
                print(f"rvos {where} {name}: {_fmt(res[name])}; per kind: {kinds}{extra}")
    first = f"; first: {skipped['examples'][0]['message']}" if skipped["total"] else ""
    print(f"{res['expressions']} expressions, {res['scored']} scored; skipped {skipped['total']} "
          f"{skipped['by_reason'] or ''}{first} -> {args.out}")
    return res
