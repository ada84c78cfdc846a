"""STRIDE's confidence-based unmasking of one activation window (host side; as in STRIDE's reference streaming loop).

Slots start masked, except `fixed` ones (unseen, or before the last completed segment), which are given as
clean `<inactive>`. With a slot history (the previous chunk's final labels, time-aligned) and a confidence
threshold c, one baseline forward runs first and a slot keeps its history value v when |p - v| < 1 - c (with
c = 0.75: the model agrees with v at >= 0.75 confidence). The still-masked slots are then split evenly over
`steps` steps; each step runs a forward, ranks the masked slots by confidence max(p, 1 - p), takes the top
2k as candidates and unmasks k of them chosen uniformly at random, with label p > 0.5.

`predict(labels) -> p_active` is any callable: the runtime's cached forward, or a stub in tests.
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
    p_active: np.ndarray  # (W,) float32: p of each slot at the forward that decided it (fixed: 0)
    step_of: np.ndarray  # (W,) int16: step that unmasked the slot (0 = baseline/retain, -1 fixed)
    forwards: int  # model calls made
    retained: int  # slots kept from the history


def step_sizes(n: int, steps: int) -> list[int]:
    """Split n masked slots evenly over `steps` steps (earlier steps take the remainder); empty steps are
    dropped, so n < steps gives n steps of one slot."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    base, extra = divmod(n, steps)
    return [base + (i < extra) for i in range(steps) if base + (i < extra) > 0]


def denoise(predict: Callable[[np.ndarray], np.ndarray], fixed: np.ndarray, rng: np.random.Generator, *,
            steps: int = 8, confidence: float | None = 0.75, history: np.ndarray | None = None) -> DenoiseResult:
    """Unmask a window. fixed: (W,) bool slots given as <inactive>; history: (W,) int8 previous labels
    (NO_HISTORY where none); confidence None disables the retain step."""
    fixed = np.asarray(fixed, bool)
    w = len(fixed)
    labels = np.full(w, MASKED, np.int8)
    labels[fixed] = INACTIVE
    p_at = np.zeros(w, np.float32)
    step_of = np.full(w, -1, np.int16)
    forwards = retained = 0
    if history is not None and confidence is not None:
        history = np.asarray(history, np.int8)
        has = (history != NO_HISTORY) & ~fixed
        if has.any():
            p = np.asarray(predict(labels.copy()), np.float32)
            forwards += 1
            keep = has & (np.abs(p - history) < 1.0 - confidence)
            labels[keep] = history[keep]
            p_at[keep], step_of[keep] = p[keep], 0
            retained = int(keep.sum())
    for i, k in enumerate(step_sizes(int((labels == MASKED).sum()), steps), start=1):
        p = np.asarray(predict(labels.copy()), np.float32)
        forwards += 1
        masked = np.flatnonzero(labels == MASKED)
        conf = np.maximum(p[masked], 1.0 - p[masked])
        candidates = masked[np.argsort(-conf, kind="stable")[: 2 * k]]
        chosen = rng.choice(candidates, size=k, replace=False)
        labels[chosen] = (p[chosen] > 0.5).astype(np.int8)
        p_at[chosen], step_of[chosen] = p[chosen], i
    return DenoiseResult(labels, p_at, step_of, forwards, retained)


def active_span(labels: np.ndarray, slot_starts: np.ndarray, resolution: float) -> tuple[float, float] | None:
    """One span from the first to the last active slot (seconds), or None."""
    on = np.flatnonzero(np.asarray(labels) == ACTIVE)
    if not len(on):
        return None
    return float(slot_starts[on[0]]), float(slot_starts[on[-1]] + resolution)


def shift_history(labels: np.ndarray, shift_slots: int) -> np.ndarray:
    """Previous window's labels re-aligned to a window that moved `shift_slots` slots later."""
    w = len(labels)
    out = np.full(w, NO_HISTORY, np.int8)
    if 0 <= shift_slots < w:
        out[: w - shift_slots] = np.asarray(labels, np.int8)[shift_slots:]
    return out
