"""ET-Bench (E.T. Bench, Liu et al. 2024): the annotation reader, STRIDE's text answers, and `score`, which
gives the numbers of the official evaluation (`compute_metrics.py` of the benchmark's Hugging Face repository).

Annotation file (`etbench_txt_v1.0.json`): a JSON list of {"idx", "task", "source", "video", "duration", "q",
["tgt", "g", "src", "p", "o"]}; predictions add "a", the model's text answer. STRIDE answers with its trigger
segments formatted as text ("a - b seconds", dvc/slc with a placeholder caption).

`score` reads answers as the official code does (`etbench_parse`), computes each (task, source) row with the
official arithmetic (`etbench_metrics`, `etbench_captions`), and summarizes as the official tables: per task the
mean of its sources' rounded numbers, the "Overall" row (14 columns) and the "Merged" row (5 columns).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

from data_pipelines.errors import AnnotationError
from stvl_jax.errors import InputError
from stvl_jax.eval import etbench_metrics as em
from stvl_jax.eval.etbench_captions import METRICS as CAPTION_METRICS
from stvl_jax.eval.etbench_captions import CaptionScorer

TASKS = ("tvg", "epm", "tal", "dvc", "slc")  # the tasks STRIDE answers (`stvl eval etbench`)
ALL_TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc", "tem", "gvq")
THRESHOLDS = em.THRESHOLDS
# The official "Overall" columns: (label, task, the per-source number averaged), in its order
OVERALL = (("RAR (Acc)", "rar", "Acc"), ("EVC (Acc)", "eca", "Acc"), ("RVQ (Acc)", "rvq", "Acc"),
           ("TVG (F1)", "tvg", "F1"), ("EPM (F1)", "epm", "F1"), ("TAL (F1)", "tal", "F1"),
           ("EVS (F1)", "evs", "F1"), ("VHD (F1)", "vhd", "F1"), ("DVC (F1)", "dvc", "F1"),
           ("DVC (Sim)", "dvc", "SentSim"), ("SLC (F1)", "slc", "F1"), ("SLC (Sim)", "slc", "SentSim"),
           ("TEM (Rec)", "tem", "mRec"), ("GVQ (Rec)", "gvq", "mRec"))
# The official "Merged" columns: (label, the Overall columns averaged)
MERGED = (("Acc (ref)", ("RAR (Acc)", "EVC (Acc)", "RVQ (Acc)")),
          ("F1 (gnd)", ("TVG (F1)", "EPM (F1)", "TAL (F1)", "EVS (F1)", "VHD (F1)")),
          ("F1 (cap)", ("DVC (F1)", "SLC (F1)")), ("Sim (cap)", ("DVC (Sim)", "SLC (Sim)")),
          ("Rec (com)", ("TEM (Rec)", "GVQ (Rec)")))


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
                _segments(s["tgt"], key)  # checked; kept as written (the official metrics read it raw)
                out.append({**s, "record": key})
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


def score(samples: Sequence[dict], captions: CaptionScorer | None = None) -> dict:
    """Official E.T. Bench metrics of samples carrying answers 'a'.

    -> {task: {source: row}, "summary": {"tasks", "overall", "merged", "means", "not_computed"}}. A row holds the
    official columns (`etbench_metrics`); caption metrics (dvc/slc) and the SentSim fallback of the choice tasks
    come from `captions` (None: not computed). "tasks": {Overall label: mean over the task's sources of the rounded
    per-source number, rounded to 5 decimals}; "overall" / "merged": the official tables in percent, 1 decimal
    (None where a task is absent or a number is not computed). A malformed sample raises InputError naming it."""
    groups: dict[str, dict[str, list]] = {}
    for i, s in enumerate(samples):
        _check(s, i)
        groups.setdefault(s["task"], {}).setdefault(s.get("source", ""), []).append(s)
    sim = captions.similarity if captions is not None and captions.has_similarity else None
    out: dict = {task: {src: _row(task, rows, sim, captions) for src, rows in by_src.items()}
                 for task, by_src in groups.items()}
    out["summary"] = _summary(out, captions)
    return out


def _row(task: str, rows: list[dict], sim, captions: CaptionScorer | None) -> dict:
    if task in ("tvg", "epm"):
        return em.grounding(rows)
    if task == "tem":
        return em.moment_recall(rows)
    if task == "tal":
        return em.localization(rows)
    if task == "evs":
        return em.summarization(rows)
    if task == "vhd":
        return em.highlight(rows)
    if task in ("rar", "eca", "rvq"):
        return em.choice_accuracy(rows, sim)
    if task == "gvq":
        return em.grounded_qa(rows, sim)
    videos, failed = em.dense_parse(rows)
    f1 = em.dense_detection(videos, len(rows))[0]
    row = {"Total": len(rows), "Failed": failed}
    row.update({f"F1@{t}": em.r5(v) for t, v in zip(THRESHOLDS, f1)})
    row["F1"] = em.r5(sum(f1) / len(f1))
    return row | (captions.score(videos) if captions is not None else {m: None for m in CAPTION_METRICS})


def _mean5(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else em.r5(sum(values) / len(values))


def _summary(out: dict, captions: CaptionScorer | None) -> dict:
    tasks = {label: _mean5([row.get(key) for row in out[task].values()]) if task in out else None
             for label, task, key in OVERALL}
    overall = {label: None if v is None else round(v * 100, 1) for label, v in tasks.items()}
    merged = {label: None if any(tasks[c] is None for c in cols) else round(sum(tasks[c] for c in cols) * 100 /
                                                                             len(cols), 1)
              for label, cols in MERGED}

    def pooled(task_names, key):  # the official per-group "Mean ..." lines: over all sources of the group
        return _mean5([row.get(key) for t in task_names if t in out for row in out[t].values()])

    means = {"Referring Acc": pooled(("rar", "eca", "rvq"), "Acc"),
             "Grounding F1": pooled(("tvg", "epm", "tal", "evs", "vhd"), "F1"),
             "Captioning F1": pooled(("dvc", "slc"), "F1"), "Captioning SentSim": pooled(("dvc", "slc"), "SentSim")}
    if captions is None:
        not_computed = {m: "no caption scorer" for m in CAPTION_METRICS} if {"dvc", "slc"} & set(out) else {}
    else:
        not_computed = captions.missing()
    return {"tasks": tasks, "overall": overall, "merged": merged, "means": means, "not_computed": not_computed}


# The official tables' columns per group: (title, tasks, columns)
_GROUPS = (("Referring", ("rar", "eca", "rvq"), ("Acc",)),
           ("Grounding", ("tvg", "epm", "tal", "evs", "vhd"), ("F1@0.1", "F1@0.3", "F1@0.5", "F1@0.7", "F1")),
           ("Captioning", ("dvc", "slc"), ("F1@0.1", "F1@0.3", "F1@0.5", "F1@0.7", "F1", "Bleu_1", "Bleu_2", "Bleu_3",
                                           "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SentSim")),
           ("Complex", ("tem", "gvq"), ("R@0.1", "R@0.3", "R@0.5", "R@0.7", "mRec", "Acc")))


def tables(result: dict) -> str:
    """The official log's tables as text: one per task group, then Overall and Merged ('-': not applicable,
    'n/c': not computed)."""
    def cell(v):
        return "n/c" if v is None else str(v)

    blocks = []
    for title, tasks, cols in _GROUPS:
        rows = [(t, src, r["Total"], r["Failed"], *(cell(r[c]) if c in r else "-" for c in cols))
                for t in tasks if t in result for src, r in result[t].items()]
        if rows:
            blocks.append(f"{title}\n" + _grid([("Task", "Source", "Total", "Failed", *cols), *rows]))
    summary = result["summary"]
    for title in ("overall", "merged"):
        blocks.append(f"{title.capitalize()} (%)\n" + _grid([tuple(summary[title]),
                                                              tuple(cell(v) for v in summary[title].values())]))
    if summary["not_computed"]:
        blocks.append("not computed: " + "; ".join(f"{m} ({why})" for m, why in summary["not_computed"].items()))
    return "\n\n".join(blocks)


def _grid(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def _check(s, i: int) -> None:
    """One clear InputError for a sample the official script would crash on or misread."""
    if not isinstance(s, dict) or not isinstance(s.get("task"), str) or not isinstance(s.get("a"), str):
        raise InputError(f"sample {i} is not an object with a 'task' and a text answer 'a'")
    task, where = s["task"], f"sample {i} ({s['task']}/{s.get('source', '')})"
    if task not in ALL_TASKS:
        raise InputError(f"{where}: unknown task {task!r} (E.T. Bench tasks: {', '.join(ALL_TASKS)})")
    if task in ("tvg", "epm", "gvq") and not _is_span(s.get("tgt")):
        raise InputError(f"{where}: 'tgt' must be [start, end] in seconds, got {s.get('tgt')!r}")
    if task in ("tal", "evs", "tem", "dvc", "slc") and not _is_spans(s.get("tgt")):
        raise InputError(f"{where}: 'tgt' must be a non-empty list of [start, end], got {s.get('tgt')!r}")
    if task == "vhd" and not (_is_spans(s.get("tgt")) or (isinstance(s.get("tgt"), list) and s["tgt"]
                                                          and all(_is_spans(a) for a in s["tgt"]))):
        raise InputError(f"{where}: 'tgt' must be a list of [start, end] (or one such list per annotator), got "
                         f"{s.get('tgt')!r}")
    if task in ("rar", "eca", "rvq", "gvq"):
        if not isinstance(s.get("o"), list) or len(s["o"]) not in (4, 5):
            raise InputError(f"{where}: 'o' must be a list of 4 or 5 options, got {s.get('o')!r}")
        if not isinstance(s.get("p"), int) or isinstance(s["p"], bool):
            raise InputError(f"{where}: 'p' must be the index of the correct option, got {s.get('p')!r}")
    if task in ("dvc", "slc"):
        if not isinstance(s.get("video"), str):
            raise InputError(f"{where}: 'video' must be a string (dense captions are grouped by video)")
        g = s.get("g")
        if not isinstance(g, list) or len(g) != len(s["tgt"]) or not all(isinstance(c, str) for c in g):
            raise InputError(f"{where}: 'g' must hold one caption string per 'tgt' segment")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_span(x) -> bool:
    return isinstance(x, (list, tuple)) and len(x) == 2 and all(_number(v) for v in x)


def _is_spans(x) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(_is_span(v) for v in x)


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
