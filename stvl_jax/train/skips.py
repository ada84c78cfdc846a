"""What the data pipeline skipped, as the trainer reports it: counts over all processes, the metric fields
(`data/skipped/<reason>`), the progress and end-of-run text, and the two failures (more unusable records than
`data.max_skip_fraction`; an index with no usable record).

The counts are the Grain pipeline's (`BatchIterator.stats`), which travel in its iterator state, so a resumed run
continues them from the checkpoint. Sources without skips (synthetic batches) have no report (`gather` -> None).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import jax
import numpy as np

from stvl_jax.errors import TrainingError

# the fraction is judged once this many records were read (or the whole index once, if smaller), and at the end
CHECK_MIN_RECORDS = 1000


@dataclass(frozen=True)
class SkipStats:
    """Counts over all processes since the run's first step (resumes included)."""

    index: str  # the index file the records come from
    records: int  # records in the index (all shards, one pass)
    examples: int  # usable examples read
    skipped: dict[str, int]  # reason -> records skipped, sorted by reason
    first: dict[str, str]  # reason -> the first record skipped for it (since this process started)

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    @property
    def read(self) -> int:
        return self.examples + self.total

    @property
    def fraction(self) -> float:
        return self.total / self.read if self.read else 0.0

    def reasons(self) -> str:
        """'bad_json 1 (first: train.jsonl:5), missing_file 2 (first: train.jsonl:9)'."""
        return ", ".join(f"{r} {n}" + (f" (first: {os.path.basename(self.first[r])})" if r in self.first else "")
                         for r, n in self.skipped.items())

    def metrics(self) -> dict:
        """Fields of a metrics record: data/examples, data/skipped and data/skipped/<reason> (cumulative)."""
        return {"data/examples": self.examples, "data/skipped": self.total,
                **{f"data/skipped/{r}": n for r, n in self.skipped.items()}}

    def summary(self) -> str:
        """The end-of-run line."""
        line = f"data: {self.examples} examples used, {self.total} of {self.read} records read skipped"
        return line + (f" ({100 * self.fraction:.1f}%): {self.reasons()}" if self.total else "")


def gather(source, collective: bool = True) -> SkipStats | None:
    """The source's skip counts summed over processes (a collective when there are several: call it on all;
    `collective=False`: this process's counts only)."""
    stats = source.stats
    if "skipped" not in stats:
        return None
    local = {"records": int(source.records), "examples": int(stats["examples"]), "skipped": stats["skipped"],
             "first": dict(source.first_skips)}
    parts = [local]
    if collective and jax.process_count() > 1:
        from stvl_jax.train.batches import allgather_ragged

        blobs = allgather_ragged(np.frombuffer(json.dumps(local).encode(), np.uint8))
        parts = [json.loads(b.tobytes()) for b in blobs]
    skipped: dict[str, int] = {}
    first: dict[str, str] = {}
    for p in parts:  # process order: process 0's first skip wins
        for r, n in p["skipped"].items():
            skipped[r] = skipped.get(r, 0) + int(n)
        for r, key in p["first"].items():
            first.setdefault(r, key)
    return SkipStats(index=str(source.config.index), records=sum(p["records"] for p in parts),
                     examples=sum(p["examples"] for p in parts), skipped=dict(sorted(skipped.items())), first=first)


def check_fraction(s: SkipStats | None, max_fraction: float, *, final: bool = False) -> None:
    """Raise `TrainingError` (one line: counts per reason) when more than `max_fraction` of the records read
    were unusable; judged once `min(index size, CHECK_MIN_RECORDS)` records were read, or at the end (`final`)."""
    if s is None or not s.read or s.fraction <= max_fraction:
        return
    if not final and s.read < min(s.records, CHECK_MIN_RECORDS):
        return
    raise TrainingError(f"{s.total} of {s.read} records read from {s.index!r} ({100 * s.fraction:.1f}%) were "
                        f"unusable, more than data.max_skip_fraction={max_fraction:g}: {s.reasons()}; fix or drop "
                        f"those records, or raise data.max_skip_fraction")


def no_first_step(s: SkipStats, batch_size: int) -> TrainingError:
    """The error of a run whose data ran out before its first step: the index is empty, every record was
    skipped, or the usable ones do not fill one batch (one pass read: `data.pipeline.num_epochs=1`)."""
    if not s.records or s.total >= s.records:
        return no_usable_record(s)
    skipped = f"; {s.total} skipped: {s.reasons()}" if s.total else ""
    return TrainingError(f"{s.index!r} ran out before the first step: its {s.records - s.total} usable records "
                         f"(of {s.records}) do not fill one batch of data.batch_size={batch_size}{skipped}")


def no_usable_record(s: SkipStats) -> TrainingError:
    """The error of an index that is empty, or whose every record read was skipped."""
    if not s.records:
        return TrainingError(f"no usable record in {s.index!r}: the index is empty")
    return TrainingError(f"no usable record in {s.index!r}: all {s.total} records read were skipped: {s.reasons()}")
