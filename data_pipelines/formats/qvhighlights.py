"""QVHighlights records and their timestamp Yes/No questions (Strefer's QVHighlights Yes/No QA task).

A QVHighlights record: {"qid", "query", "duration", "vid", "relevant_windows": [[s, e], ...]} (+ optional
"relevant_clip_ids", "saliency_scores"). Each valid record yields a balanced pair of questions asked at
explicit timestamps: "Yes" at a time inside a relevant window, "No" at a time outside every window, both at
least `margin` seconds from any window boundary and on a 0.1 s grid (the question prints one decimal).
Metric: accuracy of the first word of the prediction (yes/no) against the answer.
"""

from __future__ import annotations

import math
import re

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.formats import as_seconds
from data_pipelines.synthetic.vocabulary import YESNO_QUESTION


def validate_record(rec, source: str = "") -> dict:
    """Check fields and windows (0 <= s < e <= duration); returns the record."""
    if not isinstance(rec, dict):
        raise AnnotationError("bad_record", "QVHighlights record must be a JSON object", source)
    for key in ("qid", "query", "duration", "vid", "relevant_windows"):
        if key not in rec:
            raise AnnotationError("missing_field", f"record lacks {key!r}", source)
    if not isinstance(rec["query"], str) or not rec["query"].strip():
        raise AnnotationError("bad_field", "query must be a non-empty string", source)
    _identifier(rec, "qid", "record", source)
    _identifier(rec, "vid", "record", source)
    if rec.get("video") is not None and not isinstance(rec["video"], str):
        raise AnnotationError("bad_field", f"video must be a path string, got {type(rec['video']).__name__}", source)
    try:
        duration = as_seconds(rec["duration"])
    except (TypeError, ValueError):
        raise AnnotationError("bad_time", f"duration {rec['duration']!r} is not a number", source) from None
    if math.isnan(duration):
        raise AnnotationError("nan_time", "duration is NaN", source)
    if duration <= 0 or math.isinf(duration):
        raise AnnotationError("bad_time", f"duration must be positive and finite, got {duration}", source)
    wins = rec["relevant_windows"]
    if not isinstance(wins, list) or not wins:
        raise AnnotationError("missing_field", "relevant_windows must be a non-empty list", source)
    for w in wins:
        if not (isinstance(w, (list, tuple)) and len(w) == 2):
            raise AnnotationError("bad_field", f"window {w!r} is not [start, end]", source)
        try:
            s, e = as_seconds(w[0]), as_seconds(w[1])
        except (TypeError, ValueError):
            raise AnnotationError("bad_time", f"window {w!r} has non-numeric times", source) from None
        if math.isnan(s) or math.isnan(e):
            raise AnnotationError("nan_time", f"window {w!r} has NaN", source)
        if s < 0 or e < 0:
            raise AnnotationError("negative_time", f"window {w!r} is negative", source)
        if e <= s:
            raise AnnotationError("bad_span", f"window {w!r} is empty", source)
        if e > duration + 1e-6:
            raise AnnotationError("time_out_of_range", f"window {w!r} ends after duration {duration}", source)
    return rec


def _identifier(rec: dict, key: str, what: str, source: str):
    """rec[key] as an identifier: a non-empty string or an integer."""
    if rec.get(key) is None:
        raise AnnotationError("missing_field", f"{what} lacks {key!r}", source)
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, (str, int)) or v == "":
        raise AnnotationError("bad_field", f"{what} {key} must be a non-empty string or an integer, got {v!r}",
                              source)
    return v


def _grid(lo: float, hi: float) -> np.ndarray:
    """0.1 s grid points in [lo, hi]."""
    a, b = math.ceil(lo * 10 - 1e-9), math.floor(hi * 10 + 1e-9)
    return np.arange(a, b + 1) / 10 if b >= a else np.zeros(0)


def yes_no_times(windows, duration: float, margin: float = 0.5):
    """Candidate timestamps (inside windows, outside all windows), margin away from every boundary."""
    wins = sorted((float(s), float(e)) for s, e in windows)
    inside = np.concatenate([_grid(s + margin, e - margin) for s, e in wins] + [np.zeros(0)])
    cand = _grid(0.0, duration - 0.1)
    outside = np.array([t for t in cand if all(t < s - margin or t > e + margin for s, e in wins)])
    return inside, outside


def to_yesno(rec: dict, rng: np.random.Generator, margin: float = 0.5, source: str = "") -> list[dict]:
    """One record -> [yes_question, no_question]. Raises AnnotationError when either side has no timestamp."""
    validate_record(rec, source)
    inside, outside = yes_no_times(rec["relevant_windows"], float(rec["duration"]), margin)
    if not len(inside):
        raise AnnotationError("no_yes_time", "no timestamp inside a window clear of its boundaries", source)
    if not len(outside):
        raise AnnotationError("no_no_time", "no timestamp outside every window", source)
    out = []
    for answer, pool in (("Yes", inside), ("No", outside)):
        t = float(pool[int(rng.integers(len(pool)))])
        question = YESNO_QUESTION.format(t=t, query=rec["query"].rstrip(". "))
        item = {"id": f"{rec['qid']}_{answer.lower()}", "qid": rec["qid"], "vid": rec["vid"],
                "duration": float(rec["duration"]), "timestamp": round(t, 1), "query": rec["query"],
                "question": question, "answer": answer}
        if rec.get("video"):
            item["video"] = rec["video"]
            item["messages"] = [
                {"role": "user", "content": [{"type": "video", "path": rec["video"]},
                                             {"type": "text", "text": question}]},
                {"role": "assistant", "content": answer},
            ]
        out.append(item)
    return out


_WORD = re.compile(r"[a-z]+")


def normalize_yesno(text: str) -> str | None:
    """'Yes.' / ' yes, it is' -> 'yes'; anything else -> None (counts as wrong)."""
    m = _WORD.search(str(text).lower())
    return m.group(0) if m and m.group(0) in ("yes", "no") else None


def validate_yesno_sample(rec, source: str = "", *, with_media: bool = False) -> dict:
    """A Yes/No sample (what `to_yesno` writes) as scored: a JSON object with an `id` and an `answer` that is
    Yes or No (any case); `with_media` (evaluation): also a non-empty `video` and `question`. Returns the record;
    raises AnnotationError (bad_record, missing_field, bad_field)."""
    if not isinstance(rec, dict):
        raise AnnotationError("bad_record", f"sample must be a JSON object, got a {type(rec).__name__}", source)
    _identifier(rec, "id", "sample", source)
    for key in ("video", "question") if with_media else ():
        if key not in rec:
            raise AnnotationError("missing_field", f"sample lacks {key!r}", source)
        if not isinstance(rec[key], str) or not rec[key].strip():
            raise AnnotationError("bad_field", f"sample {key!r} must be a non-empty string", source)
    answer = rec.get("answer")
    if answer is None:
        raise AnnotationError("missing_field", "sample lacks 'answer'", source)
    if not isinstance(answer, str) or answer.strip().lower() not in ("yes", "no"):
        raise AnnotationError("bad_field", f"sample answer must be Yes or No, got {answer!r}", source)
    return rec


def parse_yesno_prediction(rec, source: str = "") -> tuple:
    """A prediction line {"id", "prediction"} ("answer" is read when "prediction" is absent) -> (id, text).
    Raises AnnotationError when the id or the text is missing or not a string (never scored as an empty answer)."""
    if not isinstance(rec, dict):
        raise AnnotationError("bad_record", f"prediction must be a JSON object, got a {type(rec).__name__}", source)
    rid = _identifier(rec, "id", "prediction", source)
    key = "prediction" if "prediction" in rec else "answer"
    text = rec.get(key)
    if text is None:
        raise AnnotationError("missing_field", "prediction lacks 'prediction' (or 'answer')", source)
    if not isinstance(text, str):
        raise AnnotationError("bad_field", f"prediction {key} must be a string, got {type(text).__name__}", source)
    return rid, text


def yesno_accuracy(samples: list[dict], predictions: dict[str, str]) -> dict:
    """Accuracy over samples (missing predictions count as wrong, and are counted in `missing_predictions`)
    -> {accuracy, correct, total, yes_accuracy, no_accuracy, missing_predictions}."""
    total = correct = missing = 0
    per = {"yes": [0, 0], "no": [0, 0]}
    for s in samples:
        gold = s["answer"].strip().lower()
        missing += s["id"] not in predictions
        ok = normalize_yesno(predictions.get(s["id"], "")) == gold
        total += 1
        correct += ok
        per[gold][0] += ok
        per[gold][1] += 1
    acc = correct / total if total else 0.0
    return {"accuracy": acc, "correct": correct, "total": total,
            "yes_accuracy": per["yes"][0] / per["yes"][1] if per["yes"][1] else None,
            "no_accuracy": per["no"][0] / per["no"][1] if per["no"][1] else None,
            "missing_predictions": missing}
