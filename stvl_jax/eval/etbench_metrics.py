"""E.T. Bench per-source metrics, computed as the official `compute_metrics.py` computes them.

Every function takes the samples of one (task, source) and returns the official row: {"Total", "Failed", ...}
with each number rounded to 5 decimals (means over thresholds are taken before rounding). The arithmetic is the
official one, because ties at the thresholds decide hits:

- tvg/epm/tem/gvq: IoU in float32 (the official torch tensors: inter / (len_a + len_b - inter)), compared as a
  double with the double threshold — IoU 0.7 in float32 is 0.69999999 and misses at 0.7;
- tal: float32 IoU against float32(threshold) (torch casts the Python threshold to the tensor's dtype), and the
  per-sample recall / precision are float32 means;
- dvc/slc detection: double IoU = intersection / (union + 1e-8), a target counts as covered when IoU > t
  (`etbench_captions` pairs captions at IoU >= t, as the official code does).

Answers are read by `etbench_parse`; a sample whose answer yields nothing is "Failed" and scores 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.eval.etbench_parse import parse_captioned_segments, parse_point, parse_segments

THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
LETTERS = "abcde"
Similarity = Callable[[str, str], float]  # (answer, option text) -> score; the official SentSim cosine


def r5(x: float) -> float:
    """The official rounding of every reported number."""
    return round(float(x), 5)


def iou_f32(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """(len(a), len(b)) temporal IoU in float32, operation for operation as nncore's `temporal_iou` (a's order
    as given: the official code does not sort targets)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 2), np.asarray(b, np.float32).reshape(-1, 2)
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]),
                    np.float32(0), None)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> nan, as torch gives
        return inter / ((a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter)


def _recall_row(samples: Sequence[dict], first_ious: list[float], failed: int, prefix: str, mean_key: str) -> dict:
    """Hit rate of `first_ious` (one per parsed sample) over all samples at each threshold."""
    n = len(samples)
    recall = [sum(iou >= t for iou in first_ious) / n for t in THRESHOLDS]
    out = {"Total": n, "Failed": failed, "mIoU": r5(sum(first_ious) / n)}
    out.update({f"{prefix}@{t}": r5(r) for t, r in zip(THRESHOLDS, recall)})
    out[mean_key] = r5(sum(recall) / len(recall))
    return out


def _parsed(samples: Sequence[dict]) -> tuple[list[tuple[dict, list]], int]:
    """([(sample, its answer's segments)] of the readable answers, number of unreadable ones)."""
    pairs = [(s, parse_segments(s["a"])) for s in samples]
    return [(s, p) for s, p in pairs if p is not None], sum(p is None for _, p in pairs)


def grounding(samples: Sequence[dict]) -> dict:
    """tvg, epm: the first predicted segment against the single target; F1@t is the hit rate (IoU >= t)."""
    parsed, failed = _parsed(samples)
    ious = [float(iou_f32([s["tgt"]], pred[:1])[0, 0]) for s, pred in parsed]
    return _recall_row(samples, ious, failed, "F1", "F1")


def moment_recall(samples: Sequence[dict]) -> dict:
    """tem: the first predicted segment against the best of the targets; R@t, mean recall mRec."""
    parsed, failed = _parsed(samples)
    ious = [float(np.max(iou_f32(s["tgt"], pred[:1]))) for s, pred in parsed]
    return _recall_row(samples, ious, failed, "R", "mRec")


def localization(samples: Sequence[dict]) -> dict:
    """tal: per sample, F1 of the targets matched (best IoU >= t) and the predictions matched, mean over all."""
    f1 = [0.0] * len(THRESHOLDS)
    parsed, failed = _parsed(samples)
    for s, pred in parsed:
        iou = iou_f32(s["tgt"], pred)
        for i, t in enumerate(THRESHOLDS):
            t32 = np.float32(t)
            if not iou.max() < t32:  # nan (zero-length target and answer) goes on, as in the official code
                rec = float(np.float32((iou.max(axis=1) >= t32).sum()) / np.float32(iou.shape[0]))
                prc = float(np.float32((iou.max(axis=0) >= t32).sum()) / np.float32(iou.shape[1]))
                f1[i] += 2 * prc * rec / (prc + rec) if prc + rec else 0.0  # (0/0 stops the official script)
    n = len(samples)
    f1 = [f / n for f in f1]
    out = {"Total": n, "Failed": failed}
    out.update({f"F1@{t}": r5(v) for t, v in zip(THRESHOLDS, f1)})
    out["F1"] = r5(sum(f1) / len(f1))
    return out


def _second_mask(segments: Sequence[Sequence[float]]) -> np.ndarray:
    """1000 one-second bins; a segment covers [max(0, round(s)), round(e)) with Python's (half-even) round and
    Python slicing (a negative end counts from the back, as the official torch slice does)."""
    mask = np.zeros(1000, bool)
    for s, e in segments:
        mask[max(0, round(s)):round(e)] = True
    return mask


def summarization(samples: Sequence[dict]) -> dict:
    """evs: per parsed sample, F1 of the seconds covered by the answer vs the targets; mean over parsed ones."""
    f1 = []
    parsed, failed = _parsed(samples)
    for s, pred in parsed:
        gt, pr = _second_mask(s["tgt"]), _second_mask(pred)
        tp, fp, fn = int((gt & pr).sum()), int((~gt & pr).sum()), int((gt & ~pr).sum())
        if tp == 0:
            f1.append(0)
            continue
        rec, prc = tp / (tp + fn), tp / (tp + fp)
        f1.append(2 * prc * rec / (prc + rec))
    return {"Total": len(samples), "Failed": failed, "F1": r5(sum(f1) / len(f1)) if f1 else 0}


def highlight(samples: Sequence[dict]) -> dict:
    """vhd: a hit when the answer's first number lies in a target segment (of any annotator)."""
    hit, failed = 0, 0
    for s in samples:
        t = parse_point(s["a"])
        if t is None:
            failed += 1
            continue
        tgt = s["tgt"] if isinstance(s["tgt"][0][0], (list, tuple)) else [s["tgt"]]
        hit += any(g[0] <= t <= g[1] for annotator in tgt for g in annotator)
    return {"Total": len(samples), "Failed": failed, "F1": r5(hit / len(samples))}


def option_texts(options: Sequence) -> list[str]:
    """'(A) text' per option; an [s, e] option reads 's - e' (Python's str of each number, as the official)."""
    return [f"({LETTERS[i].upper()}) " + (f"{o[0]} - {o[1]}" if isinstance(o, (list, tuple)) else str(o))
            for i, o in enumerate(options)]


def _letters(options: Sequence, where: str) -> str:
    if len(options) not in (4, 5):
        raise InputError(f"{where}: 'o' must hold 4 or 5 options (the official evaluation knows no other), got "
                         f"{len(options)}")
    return LETTERS[: len(options)]


def _most_similar(text: str, options: Sequence, sim: Similarity) -> int:
    """Index of the option most similar to `text` (the first of equal ones)."""
    scores = [sim(text, o) for o in option_texts(options)]
    return int(np.argmax(scores))


def choice_accuracy(samples: Sequence[dict], sim: Similarity | None) -> dict:
    """rar, eca, rvq: "(X)" anywhere in the answer, else a leading letter ("B", "b.", "Best option: (C)"), else
    the option most similar to the answer (SentSim). The letter set follows the source's first sample. Failed:
    empty answers and answers matched only by similarity. Acc is None ("not computed") when an answer needs the
    similarity and no SentSim model is given ("Unresolved" counts them)."""
    letters = _letters(samples[0]["o"], "the first sample of the source")
    hit, failed, unresolved = 0, 0, 0
    for s in samples:
        found = re.search(r"\(([A-Za-z])\)", s["a"])
        if found and found.group(1).lower() in letters:
            hit += s["p"] == letters.index(found.group(1).lower())
            continue
        text = s["a"].lower()
        text = (text[12:] if text.startswith("best option:") else text).lstrip().lstrip("(").lstrip()
        if not text:
            failed += 1
            continue
        leading = len(text) == 1 or text[1] in "., )"
        if leading and text[0] in letters:
            hit += s["p"] == letters.index(text[0])
            continue
        failed += not (found or leading)  # the official "ever matched" a letter form
        if sim is None:
            unresolved += 1
            continue
        hit += s["p"] == _most_similar(text, s["o"], sim)
    out = {"Total": len(samples), "Failed": failed, "Acc": None if unresolved else r5(hit / len(samples))}
    if unresolved:
        out["Unresolved"] = unresolved
    return out


def grounded_qa(samples: Sequence[dict], sim: Similarity | None) -> dict:
    """gvq: the choice (leading letter, else SentSim) and, for correctly answered samples, the first segment of
    the answer against the target: R@t and mRec over all samples, Acc. None where SentSim was needed and absent."""
    correct, failed, unresolved = [], 0, 0
    for s in samples:
        text = s["a"][12:] if s["a"].lower().startswith("best option:") else s["a"]
        text = text.lstrip().lstrip("(").lstrip()
        if not text:
            failed += 1
            continue
        letters = _letters(s["o"], f"gvq sample {s.get('idx', '?')}")
        if (len(text) == 1 or text[1] in "., )") and text[0].lower() in letters:
            if s["p"] == letters.index(text[0].lower()):
                correct.append(s)
            continue
        if sim is None:
            unresolved += 1
            continue
        if s["p"] == _most_similar(text, s["o"], sim):
            correct.append(s)
    parsed, rec_failed = _parsed(correct)
    ious = [float(iou_f32([s["tgt"]], pred[:1])[0, 0]) for s, pred in parsed]
    out = _recall_row(samples, ious, rec_failed + failed, "R", "mRec")
    out["Acc"] = r5(len(correct) / len(samples))
    if unresolved:
        out.update({k: None for k in out if k not in ("Total", "Failed")}, Unresolved=unresolved)
    return out


def dvc_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """The dense-captioning IoU: double precision, union + 1e-8 in the denominator."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), a[1] - a[0] + b[1] - b[0])
    return float(inter) / (union + 1e-8)


def dense_parse(samples: Sequence[dict]) -> tuple[dict[str, dict], int]:
    """dvc/slc answers -> ({video: {"tgt", "g", "spans", "captions"}} (a later sample of the same video replaces
    an earlier one, as the official dicts do), number of unparseable answers)."""
    videos, failed = {}, 0
    for s in samples:
        parsed = parse_captioned_segments(s["a"])
        if parsed is None:
            failed += 1
            continue
        videos[s["video"]] = {"tgt": s["tgt"], "g": s["g"], "spans": parsed[0][:1000], "captions": parsed[1][:1000]}
    return videos, failed


def dense_detection(videos: dict[str, dict], n_samples: int) -> tuple[list[float], list[float], list[float]]:
    """Per threshold: (recall, precision) means over the parsed videos, scaled by parsed videos / samples, and the
    F1 of the scaled pair. -> (F1 per threshold, recall, precision) unrounded."""
    scale = len(videos) / n_samples
    f1s, recs, prcs = [], [], []
    for t in THRESHOLDS:
        rec, prc = [], []
        for v in videos.values():
            hit = np.array([[dvc_iou(p, g) > t for g in v["tgt"]] for p in v["spans"]]).reshape(len(v["spans"]), -1)
            prc.append(float(hit.any(axis=1).sum()) / len(v["spans"]))
            rec.append(float(hit.any(axis=0).sum()) / len(v["tgt"]))
        r = (sum(rec) / len(rec) if rec else 0) * scale
        p = (sum(prc) / len(prc) if prc else 0) * scale
        f1s.append(0 if p + r == 0 else 2 * p * r / (p + r))
        recs.append(r)
        prcs.append(p)
    return f1s, recs, prcs
