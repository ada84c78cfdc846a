"""From per-chunk activation spans to completed segments (triggers), as the released STRIDE code's
`_update_segments` decides them.

Each diffusion yields at most one span (first active slot's start to last active slot's end, absolute
seconds). Against the pending (incomplete) segment:
  merge   — when the span starts at or before the pending segment's end: start = the earlier start, end = the
            NEW span's end (the model may withdraw an end it predicted before);
  discard — else, when the pending segment ends at or after the start of the first seen slot (it was in view
            and not re-predicted: a false positive);
  accept  — else (it has left the window): it completes now.
The (merged) span then completes — a trigger — when it ends strictly before `t_last - margin`, else it is
pending. Single-event mode stops after the diffusion that completes a segment (which may complete two: an
accepted one and a trigger); multi-event mode stops once `max_triggers` are complete. At the end of the
stream the open segment is finalized; with `fallback`, a stream without any segment answers [0, t_last]
(t_last: the last decoded frame). Segments are reported clipped at 0 (a span may start one slot before the
first frame); the tracker keeps the unclipped times.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    trigger_time: float | None = None  # stream time (last frame) when it was completed; None: finalized/fallback
    kind: str = "trigger"  # trigger | accepted (left the window) | final (end of stream) | fallback


@dataclass
class TriggerTracker:
    margin: float = 1.0
    multi_event: bool = False
    max_triggers: int = 50
    fallback: bool = True
    pending: Segment | None = None
    segments: list[Segment] = field(default_factory=list)  # completed, in order, unclipped
    discarded: list[Segment] = field(default_factory=list)

    @property
    def done(self) -> bool:
        limit = self.max_triggers if self.multi_event else 1
        return len(self.segments) >= limit

    @property
    def settled_until(self) -> float | None:
        """Slots ending at or before this time are fixed to <inactive> (the latest end of a completed segment)."""
        return max(g.end for g in self.segments) if self.segments else None

    def update(self, span: tuple[float, float] | None, first_seen_start: float, t_last: float) -> list[Segment]:
        """Feed one diffusion's span; first_seen_start: start of the window's first seen slot; returns the
        segments completed by it (in order). No-op once `done` (the loop stops there)."""
        if self.done:
            return []
        new: list[Segment] = []
        cur = None if span is None else Segment(span[0], span[1])
        prev, self.pending = self.pending, None
        if prev is not None:
            if cur is not None and cur.start <= prev.end:
                cur = Segment(min(cur.start, prev.start), cur.end)
            elif prev.end >= first_seen_start:
                self.discarded.append(prev)
            else:
                new.append(Segment(prev.start, prev.end, t_last, "accepted"))
        if cur is not None:
            if cur.end < t_last - self.margin:
                new.append(Segment(cur.start, cur.end, t_last, "trigger"))
            else:
                self.pending = cur
        self.segments.extend(new)
        return new

    def finalize(self) -> list[Segment]:
        """End of stream (after the last chunk that ran): the open segment completes as "final"."""
        if self.pending is None or self.done:
            return []
        new = [Segment(self.pending.start, self.pending.end, None, "final")]
        self.pending = None
        self.segments.extend(new)
        return new

    def finish(self, t_last: float) -> list[Segment]:
        """After the loop: with `fallback`, [0, t_last] when nothing completed (t_last: last decoded frame)."""
        if self.segments or not self.fallback:
            return []
        new = [Segment(0.0, float(t_last), None, "fallback")]
        self.segments.extend(new)
        return new

    def reported(self) -> list[Segment]:
        """The completed segments as the reference reports them: times clipped at 0."""
        return [replace(g, start=max(0.0, g.start), end=max(0.0, g.end)) for g in self.segments]
