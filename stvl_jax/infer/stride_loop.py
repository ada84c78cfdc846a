"""STRIDE's streaming decision loop (host side, numpy only), as the released STRIDE code's `detect` runs it.

Geometry: T decoded frames with times `times` (s). The cursor advances `chunk_size` frames (the last step
to T, odd or not); while more than `max_window` frames lie between `stack_start` and the cursor, `stack_start`
advances by `stride`. The frames in view are [stack_start, stack_start + n) with n = cursor - stack_start
rounded down to even (frames go in pairs: with T odd the last frame is never shown, and the last chunk repeats
the previous view, re-diffused with its history); a view of fewer than 2 frames is skipped (no diffusion, and
no end-of-stream finalization if it was the last). The mega-window is [stack_start, stack_start + m), m the
frames up to `max_window` (even).

Slot grid per chunk (the reference's arithmetic, float64): offset = time of the first frame in view,
rel = t_last - offset; slot i starts at rel - window*res + i*res (+ offset), i < window + future, ends one `res`
later; a slot is unseen when its relative end + 0.1 < 0 (so the slot just before the first frame is seen).
Each chunk denoises the grid (`models.stride.sampler.denoise`; slots ending at or before the latest completed
end fixed), takes one span (first active slot's start to last active slot's end) and feeds the trigger tracker
with the first seen slot's start. When that completes a segment in multi-event mode the same view is
re-diffused without history, up to `max_triggers` times. The history of the next chunk is the last diffusion's
seen slots, matched to the new grid by time overlap. Model calls come through `open_view`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from stvl_jax.models.stride.sampler import active_span, denoise, match_history
from stvl_jax.models.stride.triggers import Segment, TriggerTracker

FRAMES_PER_GROUP = 2  # Qwen3-VL's temporal patch: frames go in pairs

# open_view(stack_start, mega_end, n) -> (predict(labels) -> p_active (W,) float32, prefill ran?)
OpenView = Callable[[int, int, int], tuple[Callable[[np.ndarray], np.ndarray], bool]]


@dataclass
class ChunkRecord:
    t_last: float  # stream time of the chunk's last frame in view (s)
    seen_start: float  # stream time of the first frame in view
    slot_starts: np.ndarray  # (W,) absolute slot start times
    unseen: np.ndarray  # (W,) bool: slots ending more than 0.1 s before the first frame in view
    labels: np.ndarray  # (W,) final labels (of the last diffusion)
    p_active: np.ndarray  # (W,) p(active) when each slot was decided
    span: tuple[float, float] | None
    forwards: int  # model calls of the chunk (all diffusions)
    retained: int
    prefix_built: bool
    latency_s: float  # wall time of the chunk (prefix build, if any, + all steps)
    triggers: list[Segment] = field(default_factory=list)


@dataclass
class StreamResult:
    chunks: list[ChunkRecord]
    segments: list[Segment]  # completed/finalized segments in order, clipped at 0 (as the reference reports)
    discarded: list[Segment]
    duration: float  # stream time of the last decoded frame


def stream_times(n_frames: int, fps: float, times=None) -> np.ndarray:
    """(T,) float64 frame times: `times` as given (decoded timestamps), else index / fps."""
    if times is None:
        return np.arange(n_frames) / fps
    return np.asarray(times, np.float64)


def slot_grid(times: np.ndarray, start: int, n: int, window: int, future: int, res: float):
    """-> (starts, ends, unseen) of the grid ending at frame start + n - 1 (the reference's arithmetic)."""
    view = times[start:start + n]
    offset = float(view[0])
    rel = float(view[-1]) - offset
    starts_rel = rel - window * res + np.arange(window + future) * res
    ends_rel = starts_rel + res
    return starts_rel + offset, ends_rel + offset, ends_rel + 0.1 < 0


def stream_chunks(times: np.ndarray, open_view: OpenView, cfg, tracker: TriggerTracker, *, window: int,
                  future: int = 0, resolution: float = 1.0, rng=None) -> Iterator[ChunkRecord]:
    """Yield each chunk's record as it is decided (`triggers`: the segments it completed); stops once the
    tracker is done; after the last chunk the open segment is finalized. cfg: chunk_size, max_window, stride,
    steps, confidence, multi_event, max_triggers, seed (`infer.stride_runtime.StreamConfig`); rng: default
    `np.random.RandomState(cfg.seed)` (the reference's legacy `np.random` draws)."""
    rng = np.random.RandomState(cfg.seed) if rng is None else rng
    g = FRAMES_PER_GROUP
    total = len(times)
    drop = -(-cfg.stride // g) * g
    stack_start = cursor = 0
    history = None  # (starts, labels) of the previous diffusion's seen slots
    while cursor < total:
        t0 = time.perf_counter()
        cursor = min(cursor + cfg.chunk_size, total)
        while cursor - stack_start > cfg.max_window:
            stack_start += drop
        n = cursor - stack_start
        n -= n % g
        if n < g:
            continue
        mega = min(stack_start + cfg.max_window, total) - stack_start
        predict, built = open_view(stack_start, stack_start + mega - mega % g, n)
        starts, ends, unseen = slot_grid(times, stack_start, n, window, future, resolution)
        seen = ~unseen
        first_seen = float(starts[seen][0]) if seen.any() else 0.0
        t_last = float(times[stack_start + n - 1])
        new, forwards, retained = [], 0, 0
        for again in range(cfg.max_triggers + 1):
            hist = None
            if again == 0 and history is not None and len(history[0]):
                hist = match_history(*history, starts, ends, resolution)
            settled = tracker.settled_until
            fixed = None if settled is None else ends <= settled
            out = denoise(predict, unseen, rng, fixed=fixed, steps=cfg.steps, confidence=cfg.confidence,
                          history=hist)
            forwards, retained = forwards + out.forwards, retained + out.retained
            history = (starts[seen], out.labels[seen])
            span = active_span(out.labels, starts, ends)
            done = tracker.update(span, first_seen, t_last)
            new += done
            if not done or not cfg.multi_event or tracker.done:
                break
        yield ChunkRecord(t_last, float(times[stack_start]), starts, unseen, out.labels, out.p_active, span,
                          forwards, retained, built, time.perf_counter() - t0, new)
        if tracker.done:
            return
        if cursor >= total:
            tracker.finalize()


def run_stream(times: np.ndarray, open_view: OpenView, cfg, tracker: TriggerTracker, *, window: int,
               future: int = 0, resolution: float = 1.0, rng=None,
               on_chunk: Callable[[ChunkRecord], None] | None = None) -> StreamResult:
    """The whole stream: chunk records (each passed to `on_chunk` as it is decided), then the fallback."""
    records = []
    for rec in stream_chunks(times, open_view, cfg, tracker, window=window, future=future,
                             resolution=resolution, rng=rng):
        records.append(rec)
        if on_chunk is not None:
            on_chunk(rec)
    tracker.finish(float(times[-1]))
    return StreamResult(records, tracker.reported(), list(tracker.discarded), float(times[-1]))
