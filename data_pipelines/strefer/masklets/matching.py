"""Stage 4, referring matching: which tracked masklet each expression names.

Expressions are first grouped by generalized noun, as Strefer partitions them (its
2.get_referring_matching.py `partition_input`): a group holds the expressions sharing a noun and the masklets
whose detector label is that noun (`noun_groups`); each group is matched on its own, with only its own masklets
as candidates (a "dog" expression never names a "person" masklet), and a group of one expression and one masklet
needs no matcher. An expression whose noun labels no masklet is left unmatched; a masklet whose label is no
expression's noun is named by none.

Within a group, each matcher lists, per expression, candidate masklet indices (best first); `assign_one_to_one`
then applies Strefer's resolution (its 2.get_referring_matching.py): expressions with a single candidate claim it
first, then expressions with several take their first unclaimed one. Where Strefer fails the whole clip when two
single answers collide, here only the colliding expressions are dropped, each counted as a conflict.

Matchers (`MatchingConfig.kind`):
- synthetic: the caller's ground-truth boxes at the anchor frame (`boxes_fn`), each naming its expression;
  the masklet whose prompt box overlaps it most (IoU >= min_iou).
- grounding: the detector run on the anchor frame with the full expression; its best box -> the masklet.
- vlm: `box_picker(image, boxes (N, 4) of the noun group, expression) -> [index into those boxes, ...]`, as
  Strefer asks RexSeek ("Please detect {expression} in this image. Answer the question with object indexes.");
  `parse_object_indices` reads answers written as "<obj2>" tags or plain numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from data_pipelines.strefer.masklets.boxes import box_iou

BoxPicker = Callable[[np.ndarray, np.ndarray, str], Sequence[int]]
VLM_QUESTION = "Please detect {expression} in this image. Answer the question with object indexes."


def noun_key(text: str) -> str:
    """How a detector label is compared with a generalized noun: lower-cased letters and digits only (Strefer
    compares them verbatim; a word-piece detector decodes "t-shirt" as "t - shirt")."""
    return re.sub(r"[^0-9a-z]+", "", text.lower())


@dataclass(frozen=True)
class NounGroup:
    """Expressions (indices, ascending) sharing the generalized noun `noun`, and the masklets (indices,
    ascending) whose detector label is that noun."""

    noun: str
    expressions: tuple[int, ...]
    masklets: tuple[int, ...]


def noun_groups(nouns: Sequence[str], labels: Sequence[str]) -> list[NounGroup]:
    """nouns [E] (one per expression), labels [N] (one per masklet) -> the groups, in order of their noun's first
    expression. Every expression is in exactly one group; a group's masklets may be empty."""
    by_noun: dict[str, list[int]] = {}
    for e, n in enumerate(nouns):
        by_noun.setdefault(noun_key(n), []).append(e)
    keys = [noun_key(lab) for lab in labels]
    return [NounGroup(nouns[es[0]], tuple(es), tuple(i for i, k in enumerate(keys) if key and k == key))
            for key, es in by_noun.items()]


def assign_one_to_one(candidates: Sequence[Sequence[int]]) -> tuple[dict[int, int], list[int], list[int]]:
    """candidates[e]: masklet indices for expression e, best first -> ({expression: masklet}, conflicting
    expressions, expressions left without a masklet)."""
    claims: dict[int, list[int]] = {}
    for e, c in enumerate(candidates):
        if len(c) == 1:
            claims.setdefault(c[0], []).append(e)
    out = {es[0]: m for m, es in claims.items() if len(es) == 1}
    conflicts = sorted(e for es in claims.values() if len(es) > 1 for e in es)
    taken = set(out.values()) | {m for m, es in claims.items() if len(es) > 1}
    for e, c in enumerate(candidates):
        if len(c) > 1:
            free = [m for m in c if m not in taken]
            if free:
                out[e] = free[0]
                taken.add(free[0])
    unmatched = [e for e in range(len(candidates)) if e not in out and e not in conflicts]
    return out, conflicts, unmatched


def _best_overlap(box: Sequence[float], prompt_boxes: np.ndarray, min_iou: float) -> list[int]:
    if len(prompt_boxes) == 0:
        return []
    iou = box_iou(np.asarray(box, np.float64)[None], prompt_boxes)[0]
    best = int(np.argmax(iou))
    return [best] if iou[best] >= min_iou else []


def synthetic_candidates(gt_items, prompt_boxes: np.ndarray, num_expressions: int, min_iou: float) -> list[list[int]]:
    """gt_items: [(xyxy, expression index or None)] at the anchor frame."""
    out: list[list[int]] = [[] for _ in range(num_expressions)]
    for box, e in gt_items:
        if e is not None and 0 <= e < num_expressions:
            out[e] = _best_overlap(box, prompt_boxes, min_iou)
    return out


def grounding_candidates(detector, image: np.ndarray, anchor: int, expressions: Sequence[str],
                         prompt_boxes: np.ndarray, min_iou: float,
                         expression_ids: Sequence[int] | None = None) -> list[list[int]]:
    """expression_ids: each expression's index in the clip (what the oracle detector reports; default 0..E-1)."""
    ids = list(expression_ids) if expression_ids is not None else list(range(len(expressions)))
    out = []
    for e, expression in zip(ids, expressions):
        det = detector.detect(image, [expression], anchor)
        keep = [i for i in range(len(det)) if det.expression_index[i] in (None, e)]  # the oracle knows its boxes
        if not keep:
            out.append([])
            continue
        best = max(keep, key=lambda i: float(det.scores[i]))
        out.append(_best_overlap(det.boxes[best], prompt_boxes, min_iou))
    return out


def vlm_candidates(picker: BoxPicker, image: np.ndarray, expressions: Sequence[str],
                   prompt_boxes: np.ndarray) -> list[list[int]]:
    out = []
    for expression in expressions:
        picked = [int(i) for i in picker(image, prompt_boxes, expression)]
        out.append([i for i in dict.fromkeys(picked) if 0 <= i < len(prompt_boxes)])
    return out


def parse_object_indices(answer: str) -> list[int]:
    """'<ground>the cat</ground><objects><obj0><obj2></objects>' -> [0, 2]; '1, 3' -> [1, 3]."""
    tags = re.findall(r"<obj(\d+)>", answer)
    return [int(t) for t in (tags or re.findall(r"\d+", answer))]
