"""STRIDE's confidence-based unmasking of one activation window (host side), as the released STRIDE code's
streaming loop does it (its `_diffuse_shifted` / `_unmask`).

Slots start masked, except the `unseen` ones (ending more than 0.1 s before the first frame in view) and the
`fixed` ones (ending at or before the end of the last completed segment), which are given as clean `<inactive>`.
Retain: with a slot history (the previous diffusion's labels, matched by time overlap: `match_history`) and a
confidence threshold c, one baseline forward runs first and every seen slot whose matched history value v the
model agrees with (|p - v| < 1 - c) takes v — fixed slots included, as in the reference. Schedule: the number of
SEEN slots (not of the still-masked ones) is split evenly over `steps` steps, earlier steps taking the remainder;
each step is capped at what is still masked and skipped (no forward) at zero. Each step runs a forward, ranks
the masked slots by confidence max(p, 1 - p), takes the top c = min(2k, masked) with `np.argpartition` (its
order and its choice among equal confidences, which is what the reference's random pick then indexes) and
unmasks k of them drawn with `rng.choice(candidates, k, replace=False)`, label p > 0.5. With
`rng = np.random.RandomState(seed)` the draws are the reference's `np.random.choice` after `np.random.seed(seed)`.

`predict(labels) -> p_active` (float32) is any callable: the runtime's cached forward, or a stub in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

INACTIVE, ACTIVE, MASKED = 0, 1, 2  # slot states; index into StrideConfig.slot_token_ids
NO_HISTORY = -1


@dataclass(frozen=True)
class DenoiseResult:
    labels: np.ndarray  # (W,) int8 in {0, 1}
    p_active: np.ndarray  # (W,) float32: p of each slot at the forward that decided it (fixed/unseen: 0)
    step_of: np.ndarray  # (W,) int16: step that unmasked the slot (0 = baseline/retain, -1 fixed/unseen)
    forwards: int  # model calls made
    retained: int  # slots kept from the history


def step_sizes(n: int, steps: int) -> list[int]:
    """Split n slots evenly over `steps` steps (earlier steps take the remainder); empty steps are dropped
    (the reference skips them without a forward)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    base, extra = divmod(n, steps)
    return [base + (i < extra) for i in range(steps) if base + (i < extra) > 0]


def unmask_step(labels: np.ndarray, p: np.ndarray, k: int, rng) -> np.ndarray:
    """Unmask k of the masked slots of `labels` in place (the reference's `_unmask`); returns their indices.
    p: (W,) float32 p_active of this forward; rng: anything with `choice(a, size, replace=False)`."""
    masked = np.flatnonzero(labels == MASKED)
    if not 0 < k <= len(masked):
        raise ValueError(f"cannot unmask {k} of {len(masked)} masked slots")
    masked_p = p[masked]
    conf = np.maximum(masked_p, 1 - masked_p)
    c = min(2 * k, len(masked))
    candidates = np.argpartition(conf, -c)[-c:]  # the reference's call: same order, same choice among ties
    chosen = rng.choice(candidates, k, replace=False)
    labels[masked[chosen]] = (masked_p[chosen] > 0.5).astype(labels.dtype)
    return masked[chosen]


def denoise(predict: Callable[[np.ndarray], np.ndarray], unseen: np.ndarray, rng, *,
            fixed: np.ndarray | None = None, steps: int = 8, confidence: float | None = 0.75,
            history: np.ndarray | None = None) -> DenoiseResult:
    """Unmask a window. unseen: (W,) bool (a prefix of the window: the reference takes the seen slots as the
    last n_seen); fixed: (W,) bool seen slots given as <inactive> (completed segments); history: (W,) int8
    matched previous labels (NO_HISTORY where none) or None when there is no previous diffusion (then no
    baseline forward); confidence None disables the retain step."""
    unseen = np.asarray(unseen, bool)
    w = len(unseen)
    seen = ~unseen
    if seen.any() and unseen[np.argmax(seen):].any():
        raise ValueError("unseen slots must come before the seen ones")
    labels = np.full(w, MASKED, np.int8)
    if fixed is not None:
        labels[np.asarray(fixed, bool)] = INACTIVE
    labels[unseen] = INACTIVE
    p_at = np.zeros(w, np.float32)
    step_of = np.full(w, -1, np.int16)
    forwards = retained = 0
    if history is not None and confidence is not None:
        history = np.asarray(history, np.int8)
        p = np.asarray(predict(labels.copy()), np.float32)
        forwards += 1
        has = seen & (history != NO_HISTORY)
        keep = has & (np.abs(p - history.astype(np.float32)) < 1 - confidence)
        labels[keep] = history[keep]
        p_at[keep], step_of[keep] = p[keep], 0
        retained = int(keep.sum())
    n_seen = int(seen.sum())
    if ((labels == MASKED) & seen).any():
        for i, k in enumerate(step_sizes(n_seen, steps), start=1):
            k = min(k, int((labels == MASKED).sum()))
            if k == 0:
                continue
            p = np.asarray(predict(labels.copy()), np.float32)
            forwards += 1
            chosen = unmask_step(labels, p, k, rng)
            p_at[chosen], step_of[chosen] = p[chosen], i
    return DenoiseResult(labels, p_at, step_of, forwards, retained)


def active_span(labels: np.ndarray, slot_starts: np.ndarray, slot_ends: np.ndarray) -> tuple[float, float] | None:
    """One span from the first active slot's start to the last one's end (seconds), or None."""
    on = np.flatnonzero(np.asarray(labels) == ACTIVE)
    if not len(on):
        return None
    return float(slot_starts[on[0]]), float(slot_ends[on[-1]])


def match_history(prev_starts: np.ndarray, prev_labels: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  resolution: float) -> np.ndarray:
    """(W,) int8 history value of each slot [start, end): the previous slots overlapping it in time
    (prev_start < end and start < prev_start + resolution); their label where they agree (consensus),
    NO_HISTORY where none overlaps or they disagree. Handles non-integer shifts (two overlapping slots)."""
    prev_starts = np.asarray(prev_starts, np.float64)
    prev_labels = np.asarray(prev_labels, np.int8)
    starts, ends = np.asarray(starts)[:, None], np.asarray(ends)[:, None]
    over = (starts < prev_starts[None] + resolution) & (prev_starts[None] < ends)
    n = over.sum(1)
    n_on = (over & (prev_labels[None] == ACTIVE)).sum(1)
    n_off = (over & (prev_labels[None] == INACTIVE)).sum(1)
    out = np.full(len(starts), NO_HISTORY, np.int8)
    out[(n > 0) & (n_on == n)] = ACTIVE
    out[(n > 0) & (n_off == n)] = INACTIVE
    return out
