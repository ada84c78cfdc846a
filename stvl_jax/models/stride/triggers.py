"""From per-chunk activation spans to completed segments (triggers), as in STRIDE's reference streaming loop.

Each chunk yields at most one span (first to last active slot, absolute seconds). Against the pending
(incomplete) segment it is merged when they overlap; otherwise the pending one is discarded as a false
positive if it still lies inside the seen window (the model had the chance to confirm it and did not), or
accepted if it has left the window. A pending segment is complete — a trigger — once it ends at least
`margin` seconds before the current frame. Single-event mode stops at the first trigger; multi-event mode goes
on up to `max_triggers`. At the end of the stream the open segment is finalized; with `fallback`, a stream
without any segment answers [0, t_last] (the reference's ET-Bench behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    trigger_time: float | None = None  # stream time (last frame) when it was completed; None: finalized/fallback
    kind: str = "trigger"  # trigger | accepted (left the window) | final (end of stream) | fallback

    def overlaps(self, other: "Segment") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class TriggerTracker:
    margin: float = 1.0
    multi_event: bool = False
    max_triggers: int = 50
    fallback: bool = True
    pending: Segment | None = None
    segments: list[Segment] = field(default_factory=list)
    discarded: list[Segment] = field(default_factory=list)

    @property
    def done(self) -> bool:
        limit = self.max_triggers if self.multi_event else 1
        return len(self.segments) >= limit

    @property
    def last_end(self) -> float | None:
        return self.segments[-1].end if self.segments else None

    def update(self, span: tuple[float, float] | None, seen_start: float, t_last: float) -> list[Segment]:
        """Feed one chunk's span; returns the segments completed by it (in order)."""
        new: list[Segment] = []
        cur = None if span is None else Segment(span[0], span[1])
        prev = self.pending
        if prev is not None and cur is not None and prev.overlaps(cur):
            cur = Segment(min(prev.start, cur.start), max(prev.end, cur.end))
        elif prev is not None:
            if prev.start >= seen_start:
                self.discarded.append(prev)
            else:
                new.append(Segment(prev.start, prev.end, t_last, "accepted"))
        self.pending = cur
        if cur is not None and cur.end < t_last - self.margin:
            new.append(Segment(cur.start, cur.end, t_last, "trigger"))
            self.pending = None
        return self._add(new)

    def _add(self, new: list[Segment]) -> list[Segment]:
        limit = self.max_triggers if self.multi_event else 1
        room = max(0, limit - len(self.segments))
        new = new[:room]
        self.segments.extend(new)
        return new

    def finish(self, t_last: float) -> list[Segment]:
        """End of stream: finalize the open segment (or fall back to the whole stream)."""
        new = []
        if self.pending is not None and not self.done:
            new = self._add([Segment(self.pending.start, self.pending.end, None, "final")])
            self.pending = None
        if not self.segments and self.fallback:
            new = self._add([Segment(0.0, float(t_last), None, "fallback")])
        return new
