"""STRIDE activation windows: slot ground truth, slot categories and the masking modes, as in STRIDE's reference.

A window has W slots of `resolution` seconds ending at the last frame time t_last: slot i covers
[t_last - W*res + i*res, +res). Entries (start, end, value, mask) assign slots first-wins (a slot overlaps an
entry if slot_end >= start and slot_start <= end); unassigned slots are `<inactive>` and maskable.
Categories: unseen (slot_end < 0, before the clip; GT forced to 0), fixed (entry.mask False; never masked),
maskable (the rest). Masking of the maskable slots uses one mode drawn from `mask_modes`:
  0: k ~ U{1..n} random slots;  1: all;
  2: multi-span unmask: reveal b ~ U{1..max(1, int(0.3 n))} slots in random spans kept >= 1 slot apart, retry
     until a boundary slot of the active span (first, last, first-1, last+1) stays masked (n == 1 active -> 0);
  3: span + scatter: m ~ U{1..n}; for m > 1 a contiguous block of c ~ U{1..m} slots straddling the start or
     end of the active span (random place without one), clipped, then the rest scattered; m == 1 one slot.
Unseen slots get one of 5 cases: all / none / k random / same mode with the budget scaled by
(seen_budget / n_seen) / a fresh random mode. All randomness comes from one numpy Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.formats import as_seconds
from stvl_jax.errors import ConfigError

ACTIVATION, ACTIVE, INACTIVE = "<activation>", "<active>", "<inactive>"
VALUE_TO_GT = {INACTIVE: 0, ACTIVE: 1}
GT_TOKENS = (INACTIVE, ACTIVE, ACTIVATION)  # index 2 = masked
_MAX_TRIES = 100_000


@dataclass(frozen=True)
class StrideWindowConfig:
    window: int = 16  # slots (STRIDE trains with 256 at 1 s; the synthetic clips are short)
    resolution: float = 1.0  # seconds per slot
    mask_modes: tuple[int, ...] = (1, 2, 3)
    single_sequence: bool = False  # False: the slot string is written twice (labels on the 2nd copy)

    def __post_init__(self):
        if self.window <= 0 or self.resolution <= 0:
            raise ConfigError(f"window and resolution must be positive, got {self.window} and {self.resolution}")
        if not self.mask_modes or any(m not in (0, 1, 2, 3) for m in self.mask_modes):
            raise ConfigError(f"mask_modes must be a non-empty subset of (0, 1, 2, 3), got {self.mask_modes}")


@dataclass(frozen=True)
class ActivationEntry:
    start: float
    end: float
    value: str
    mask: bool


@dataclass(frozen=True)
class Window:
    """One built window. Arrays are (W,). `mask` True = slot replaced by <activation> (to be predicted)."""

    starts: np.ndarray
    ends: np.ndarray
    gt: np.ndarray
    unseen: np.ndarray
    fixed: np.ndarray
    maskable: np.ndarray
    mask: np.ndarray
    mode: int
    budget: int

    def tokens(self) -> list[str]:
        idx = np.where(self.mask, 2, self.gt)
        return [GT_TOKENS[i] for i in idx]


def parse_entries(entries, source: str = "") -> list[ActivationEntry]:
    """Validate the `activation_output.entries` list of a STRIDE sample."""
    if not isinstance(entries, list) or not entries:
        raise AnnotationError("missing_field", "activation_output.entries must be a non-empty list", source)
    out = []
    for e in entries:
        try:
            start, end = as_seconds(e["start_seconds"]), as_seconds(e["end_seconds"])
            value, mask = e["value"], e["mask"]
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError("missing_field", f"bad activation entry {e!r} ({err})", source) from None
        if math.isnan(start) or math.isnan(end):
            raise AnnotationError("nan_time", f"activation entry has NaN time: {e!r}", source)
        if end < start:
            raise AnnotationError("bad_span", f"activation entry ends before it starts: {e!r}", source)
        if not isinstance(value, str) or value not in VALUE_TO_GT or not isinstance(mask, bool):
            raise AnnotationError("bad_field", f"entry value must be <active>/<inactive> and mask a bool: {e!r}",
                                  source)
        out.append(ActivationEntry(start, end, value, mask))
    return out


def slot_bounds(last_frame_time: float, cfg: StrideWindowConfig) -> tuple[np.ndarray, np.ndarray]:
    starts = last_frame_time - cfg.window * cfg.resolution + np.arange(cfg.window) * cfg.resolution
    return starts, starts + cfg.resolution


def slot_ground_truth(entries: list[ActivationEntry], starts: np.ndarray, ends: np.ndarray):
    """First-wins assignment -> (gt (W,) int64, entry_mask_flag (W,) bool; unassigned: 0 / True)."""
    gt = np.zeros(len(starts), dtype=np.int64)
    flag = np.ones(len(starts), dtype=bool)
    assigned = np.zeros(len(starts), dtype=bool)
    for e in entries:
        new = (ends >= e.start) & (starts <= e.end) & ~assigned
        gt[new] = VALUE_TO_GT[e.value]
        flag[new] = e.mask
        assigned |= new
    return gt, flag


def _randint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] inclusive."""
    return int(rng.integers(lo, hi + 1))


def _mode2_budget_cap(n: int) -> int:
    return max(1, int(0.3 * n))


def generate_mask(gt: np.ndarray, rng: np.random.Generator, mode: int | None = None, budget: int | None = None,
                  allowed_modes=(1, 2, 3)) -> tuple[np.ndarray, int, int]:
    """Mask over the slots of `gt` (the maskable ones) -> (mask (n,) bool, mode used, budget)."""
    n = len(gt)
    if n == 0:
        return np.zeros(0, dtype=bool), 1, 0
    if mode is None:
        mode = int(rng.choice(list(allowed_modes)))
    active = np.flatnonzero(gt == 1)
    if mode == 2 and n == 1 and len(active):
        mode = 0
    if mode == 0:
        k = _randint(rng, 1, n)
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, k, replace=False)] = True
        return mask, 0, k
    if mode == 1:
        return np.ones(n, dtype=bool), 1, n
    if mode == 2:
        return _mode2(n, active, rng, budget)
    return _mode3(n, active, rng, budget)


def _mode2(n: int, active: np.ndarray, rng, budget):
    cap = _mode2_budget_cap(n)
    b = budget if budget is not None else _randint(rng, 1, cap)
    if not 1 <= b <= cap:
        raise ValueError(f"mode-2 budget {b} outside [1, {cap}]")
    boundary = []
    if len(active):
        boundary = sorted({int(active[0]), int(active[-1]), int(active[0]) - 1, int(active[-1]) + 1})
        boundary = [i for i in boundary if 0 <= i < n]
    for _ in range(_MAX_TRIES):
        mask = np.ones(n, dtype=bool)
        remaining, spans = b, [(0, n)]  # free half-open ranges
        while remaining > 0:
            span_len = _randint(rng, 1, remaining)
            cands = [s for s in spans if s[1] - s[0] >= span_len]
            if not cands:
                break
            w = np.array([s[1] - s[0] - span_len + 1 for s in cands], dtype=np.float64)
            lo, hi = cands[int(rng.choice(len(cands), p=w / w.sum()))]
            start = _randint(rng, lo, hi - span_len)
            mask[start:start + span_len] = False
            remaining -= span_len
            spans.remove((lo, hi))
            # keep one masked slot between revealed spans
            if start - 1 > lo:
                spans.append((lo, start - 1))
            if hi > start + span_len + 1:
                spans.append((start + span_len + 1, hi))
        if remaining:
            continue
        if boundary and not mask[boundary].any():
            continue
        return mask, 2, b
    raise RuntimeError(f"mode-2 masking found no valid mask for n={n}, budget={b}")


def _mode3(n: int, active: np.ndarray, rng, budget):
    m = budget if budget is not None else _randint(rng, 1, n)
    if not 1 <= m <= n:
        raise ValueError(f"mode-3 budget {m} outside [1, {n}]")
    mask = np.zeros(n, dtype=bool)
    if m == 1:
        mask[rng.choice(n, 1, replace=False)] = True
        return mask, 3, m
    c = _randint(rng, 1, m)
    if len(active):
        t0, t1 = int(active[0]), int(active[-1])
        inside = _randint(rng, 1, min(c, t1 - t0 + 1))
        outside = c - inside
        if rng.random() < 0.5:
            lo, hi = t0 - outside, t0 + inside
        else:
            lo, hi = t1 - inside + 1, t1 + 1 + outside
    else:
        lo = _randint(rng, 0, n - 1)
        hi = lo + c
    cs, ce = max(0, lo), min(n, hi)
    mask[cs:ce] = True
    n_scatter = m - (ce - cs)
    free = np.flatnonzero(~mask)
    mask[rng.choice(free, min(n_scatter, len(free)), replace=False)] = True
    return mask, 3, m


def augment_unseen_mask(unseen_gt: np.ndarray, seen_mode: int, seen_budget: int, n_seen: int,
                        rng: np.random.Generator, allowed_modes=(1, 2, 3)) -> tuple[np.ndarray, int]:
    """Mask for unseen slots -> (mask, case 1..5)."""
    n = len(unseen_gt)
    case = _randint(rng, 1, 5)
    if case == 1:
        return np.ones(n, dtype=bool), case
    if case == 2:
        return np.zeros(n, dtype=bool), case
    if case == 3:
        m = np.zeros(n, dtype=bool)
        m[rng.choice(n, _randint(rng, 1, n), replace=False)] = True
        return m, case
    if case == 4:
        scaled = max(1, round(seen_budget / n_seen * n))
        if seen_mode == 2:
            scaled = min(scaled, _mode2_budget_cap(n))
        elif seen_mode == 3:
            scaled = min(scaled, n)
        return generate_mask(unseen_gt, rng, mode=seen_mode, budget=scaled, allowed_modes=allowed_modes)[0], case
    return generate_mask(unseen_gt, rng, allowed_modes=allowed_modes)[0], case


def build_window(entries: list[ActivationEntry], last_frame_time: float, cfg: StrideWindowConfig,
                 rng: np.random.Generator, source: str = "") -> Window:
    """Slots, GT, categories and the training mask for one sample (times re-based to the clip start)."""
    starts, ends = slot_bounds(last_frame_time, cfg)
    gt, flag = slot_ground_truth(entries, starts, ends)
    unseen = ends < 0
    fixed = ~flag & ~unseen
    maskable = flag & ~unseen
    if not maskable.any():
        raise AnnotationError("no_maskable_slots", "every slot of the window is fixed or unseen", source)
    seen_mask, mode, budget = generate_mask(gt[maskable], rng, allowed_modes=cfg.mask_modes)
    mask = np.zeros(cfg.window, dtype=bool)
    mask[maskable] = seen_mask
    n_unseen = int(unseen.sum())
    if n_unseen:
        n_maskable = int(maskable.sum())
        mask[unseen] = augment_unseen_mask(gt[unseen], mode, budget, n_maskable, rng, cfg.mask_modes)[0]
    gt = gt.copy()
    gt[unseen] = 0
    return Window(starts=starts, ends=ends, gt=gt, unseen=unseen, fixed=fixed, maskable=maskable, mask=mask,
                  mode=mode, budget=budget)


def activation_text(window: Window, cfg: StrideWindowConfig) -> str:
    """The slot string appended to the user turn (twice unless single_sequence)."""
    s = "".join(window.tokens())
    return s if cfg.single_sequence else s + s


def clip_frame_count(duration: float, fps: float, max_frames: int | None = None) -> int:
    """STRIDE's frame count for a clip: an even number >= 2 near duration * fps (frames go in pairs)."""
    n = max(2, int(round(duration * fps / 2)) * 2)
    return n if max_frames is None else min(n, max_frames - max_frames % 2)


def parse_sample(record, source: str = "") -> tuple[str, dict, list[ActivationEntry]]:
    """STRIDE JSONL line (a list of parts, or {"data": [...]}) -> (query text, video part, entries)."""
    parts = record.get("data") if isinstance(record, dict) else record
    if not isinstance(parts, list):
        raise AnnotationError("bad_record", "STRIDE sample must be a list of parts or {'data': [...]}", source)
    texts = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
    videos = [p for p in parts if isinstance(p, dict) and p.get("type") == "video"]
    acts = [p for p in parts if isinstance(p, dict) and p.get("type") == "activation_output"]
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise AnnotationError("missing_field", "STRIDE sample needs a non-empty text part", source)
    if len(videos) != 1 or len(acts) != 1:
        raise AnnotationError("missing_field", "STRIDE sample needs exactly one video and one activation_output",
                              source)
    v = videos[0]
    for key in ("path", "start_seconds", "end_seconds"):
        if key not in v:
            raise AnnotationError("missing_field", f"video part lacks {key!r}", source)
    if not isinstance(v["path"], str) or not v["path"]:
        raise AnnotationError("bad_field", f"video path must be a non-empty string, got {v['path']!r}", source)
    try:
        s, e = as_seconds(v["start_seconds"]), as_seconds(v["end_seconds"])
    except (TypeError, ValueError):
        raise AnnotationError("bad_time", "video start/end_seconds must be numbers", source) from None
    if math.isnan(s) or math.isnan(e):
        raise AnnotationError("nan_time", "video start/end_seconds is NaN", source)
    if s < 0 or e < 0:
        raise AnnotationError("negative_time", f"negative clip time [{s}, {e}]", source)
    if e <= s:
        raise AnnotationError("bad_span", f"empty clip [{s}, {e}]", source)
    return "\n".join(texts), v, parse_entries(acts[0].get("entries"), source)
