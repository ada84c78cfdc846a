"""Metrics shared by the evaluations: per-class precision/recall/F1 and macro-F1, temporal IoU F1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_report(gold: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]) -> dict:
    """Per-class P/R/F1 over aligned label lists (a None or unknown prediction counts as wrong), macro-F1 over
    `classes`, accuracy and the confusion matrix (rows gold, columns pred + 'other')."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes) + 1), np.int64)
    for g, p in zip(gold, pred):
        confusion[index[g], index.get(p, len(classes))] += 1
    per_class = {}
    for c, i in index.items():
        tp = confusion[i, i]
        fp = confusion[:, i].sum() - tp
        fn = confusion[i].sum() - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                        "support": int(confusion[i].sum())}
    return {
        "per_class": per_class,
        "macro_f1": float(np.mean([v["f1"] for v in per_class.values()])),
        "accuracy": float(np.trace(confusion[:, : len(classes)]) / max(len(gold), 1)),
        "confusion": confusion.tolist(),
        "classes": classes,
        "n": len(gold),
    }


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


def span_f1(gold: Sequence[tuple[float, float]], pred: Sequence[tuple[float, float]], threshold: float) -> dict:
    """Greedy one-to-one matching of predicted to gold spans at tIoU >= threshold -> precision, recall, F1."""
    used, tp = set(), 0
    for p in pred:
        best, best_j = threshold, None
        for j, g in enumerate(gold):
            if j not in used and (iou := temporal_iou(p, g)) >= best:
                best, best_j = iou, j
        if best_j is not None:
            used.add(best_j)
            tp += 1
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp}
