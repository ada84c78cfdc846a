"""ET-Bench (E.T. Bench, Liu et al. 2024) annotation reader and the grounding metrics STRIDE reports.

Annotation file (`etbench_txt_v1.0.json`): a JSON list of {"idx", "task", "source", "video", "duration", "q",
"tgt", ["g", "src", "p", "o"]}; predictions add "a", the model's text answer. STRIDE answers with its trigger
segments formatted as text ("a - b seconds", dvc/slc with a placeholder caption).

Metrics (thresholds tIoU 0.1 / 0.3 / 0.5 / 0.7, the reported number is the mean over them):
- tvg, epm: per sample, the first predicted segment against the single target; F1@t is the hit rate
  (IoU >= t) over all samples (unparseable answers count as misses) — ET-Bench's `tvg_eval`;
- tal: per sample, recall = share of targets matched (max IoU >= t), precision = share of predictions matched,
  F1 = harmonic mean (0 when nothing reaches t), averaged over all samples;
- dvc, slc: the temporal-only fallback of the dense-captioning score: per video, recall = share of targets
  covered by a prediction with IoU > t, precision = share of predictions covering a target; both averaged over
  the videos with a parseable answer, scaled by the parseable fraction, F1 from the scaled means. (The caption
  metrics — METEOR, CIDEr, SentSim — are out of scope: STRIDE does not caption.)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from data_pipelines.errors import AnnotationError
from stvl_jax.errors import InputError

TASKS = ("tvg", "epm", "tal", "dvc", "slc")
THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
_RANGE = re.compile(r"(\d+\.?\d*)\s*-\s*(\d+\.?\d*)")
_TO = re.compile(r"(\d+\.?\d*)\s* to \s*(\d+\.?\d*)")


def read_annotations(path: str, tasks: Sequence[str] | None = TASKS, skips=None) -> list[dict]:
    """Samples of the given tasks (None: all). A file that is missing or not a JSON list raises InputError; a bad
    sample (lacking 'task', 'video', 'q' or 'tgt', or a 'tgt' that is not [s, e] segments) raises too, or with a
    `skips` report (`eval.skips.SkipReport`) is counted there as "path[i]" and left out."""
    if not os.path.isfile(path):
        raise InputError(f"ET-Bench annotation file {path!r} not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path!r} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise InputError(f"{path!r}: expected a JSON list of samples, got {type(data).__name__}")
    out = []
    for i, s in enumerate(data):
        key = f"{path}[{i}]"
        try:
            if not isinstance(s, dict) or any(k not in s for k in ("task", "video", "q", "tgt")):
                raise AnnotationError("missing_field", "sample lacks one of 'task', 'video', 'q', 'tgt'", key)
            if not isinstance(s["video"], str) or not isinstance(s["q"], str):
                raise AnnotationError("bad_field", "'video' and 'q' must be strings", key)
            if "duration" in s and not _positive_number(s["duration"]):
                raise AnnotationError("bad_field", f"'duration' {s['duration']!r} is not a positive number of "
                                      "seconds", key)
            if tasks is None or s["task"] in tasks:
                out.append({**s, "record": key, "tgt": _segments(s["tgt"], key)})
        except InputError as e:
            if skips is None:
                raise
            skips.add_error(key, e)
    return out


def _positive_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _segments(tgt, where: str) -> list[list[float]]:
    """tgt as a list of [start, end] (tvg/epm store a single pair)."""
    try:
        arr = np.asarray(tgt, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError("bad_field", f"{where}: 'tgt' must be [s, e] or a list of [s, e] in seconds, got "
                              f"{tgt!r}") from None
    if arr.ndim == 1 and arr.shape == (2,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise AnnotationError("bad_field", f"{where}: 'tgt' must be [s, e] or a list of [s, e], got {tgt!r}")
    return np.sort(arr, axis=1).tolist()


def format_answer(segments: Sequence[Sequence[float]], task: str) -> str:
    """STRIDE's text answer: 'a - b seconds' per segment (dvc/slc: '..., <caption>.' per line)."""
    if task in ("dvc", "slc"):
        return "\n".join(f"{s:.1f} - {e:.1f} seconds, an event." for s, e in segments)
    return ", ".join(f"{s:.1f} - {e:.1f} seconds" for s, e in segments)


def parse_segments(answer: str | None) -> list[list[float]] | None:
    """'a - b' (or 'a to b') pairs in an answer -> [[s, e], ...] ordered within each pair; None if none."""
    if not answer:
        return None
    text = answer.lower()
    pairs = _RANGE.findall(text) or _TO.findall(text)
    if not pairs:
        return None
    return [sorted((float(a), float(b))) for a, b in pairs]


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """(len(a), len(b)) temporal IoU."""
    a, b = np.asarray(a, np.float64).reshape(-1, 2), np.asarray(b, np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    union = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _parsed(samples: Sequence[dict]) -> tuple[list[tuple[dict, list]], int]:
    """-> ([(sample, predicted segments)] for the parseable answers, number of unparseable ones)."""
    pairs = [(s, parse_segments(s.get("a"))) for s in samples]
    return [(s, p) for s, p in pairs if p is not None], sum(p is None for _, p in pairs)


def grounding_f1(samples: Sequence[dict]) -> dict:
    """tvg/epm: hit rate of the first predicted segment at each threshold (ET-Bench calls it F1)."""
    hits = np.zeros(len(THRESHOLDS))
    parsed, failed = _parsed(samples)
    ious = []
    for s, pred in parsed:
        iou = float(iou_matrix(s["tgt"][:1], pred[:1])[0, 0])
        ious.append(iou)
        hits += [iou >= t for t in THRESHOLDS]
    return _summary(hits / max(len(samples), 1), len(samples), failed, mIoU=sum(ious) / max(len(samples), 1))


def localization_f1(samples: Sequence[dict]) -> dict:
    """tal: per-sample F1 of matched targets / predictions, averaged over samples."""
    f1 = np.zeros(len(THRESHOLDS))
    parsed, failed = _parsed(samples)
    for s, pred in parsed:
        iou = iou_matrix(s["tgt"], pred)
        for i, t in enumerate(THRESHOLDS):
            if iou.max() >= t:
                rec, prc = (iou.max(axis=1) >= t).mean(), (iou.max(axis=0) >= t).mean()
                f1[i] += 2 * prc * rec / (prc + rec)
    return _summary(f1 / max(len(samples), 1), len(samples), failed)


def dense_temporal_f1(samples: Sequence[dict]) -> dict:
    """dvc/slc temporal-only: per-video recall/precision at IoU > t, means over parsed videos, scaled by the
    parsed fraction, then F1 (the dense-captioning detection score without captions)."""
    parsed, failed = _parsed(samples)
    per_video = {s["video"]: (s["tgt"], pred) for s, pred in parsed}
    scale = len(per_video) / max(len(samples), 1)
    f1 = np.zeros(len(THRESHOLDS))
    for i, t in enumerate(THRESHOLDS):
        if not per_video:
            break
        rec, prc = [], []
        for gt, pred in per_video.values():
            hit = iou_matrix(gt, pred) > t
            rec.append(hit.any(axis=1).mean())
            prc.append(hit.any(axis=0).mean())
        r, p = np.mean(rec) * scale, np.mean(prc) * scale
        f1[i] = 0.0 if r + p == 0 else 2 * p * r / (p + r)
    return _summary(f1, len(samples), failed)


def _summary(per_threshold: np.ndarray, total: int, failed: int, **extra) -> dict:
    out = {"total": total, "failed": failed}
    out.update({f"F1@{t}": float(v) for t, v in zip(THRESHOLDS, per_threshold)})
    out["F1"] = float(np.mean(per_threshold))
    out.update({k: float(v) for k, v in extra.items()})
    return out


SCORERS = {"tvg": grounding_f1, "epm": grounding_f1, "tal": localization_f1, "dvc": dense_temporal_f1,
           "slc": dense_temporal_f1}


def score(samples: Sequence[dict]) -> dict:
    """{task: {source: metrics}, "overall": {task: mean F1 over sources}} for samples carrying answers 'a'."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or any(k not in s for k in ("task", "tgt")):
            raise InputError(f"sample {i} is not an object with 'task' and 'tgt'")
        if s["task"] not in SCORERS:
            raise InputError(f"task {s['task']!r} has no STRIDE metric (supported: {sorted(SCORERS)})")
        groups[s["task"]][s.get("source", "")].append({**s, "tgt": _segments(s["tgt"], f"sample {i}")})
    out = {task: {src: SCORERS[task](rows) for src, rows in by_src.items()} for task, by_src in groups.items()}
    out["overall"] = {task: float(np.mean([m["F1"] for m in out[task].values()])) for task in groups}
    return out


def is_multi_event(task: str) -> bool:
    """The reference re-diffuses after each trigger for these tasks (single-event ones stop at the first)."""
    return task in ("dvc", "slc", "evs", "vhd", "tal", "tem")


def clip_segments(segments, duration: float) -> list[list[float]]:
    """Clamp to [0, duration] and drop empty ones."""
    out = []
    for s, e in segments:
        s, e = max(0.0, float(s)), min(float(duration), float(e)) if math.isfinite(duration) else float(e)
        if e > s:
            out.append([s, e])
    return out
