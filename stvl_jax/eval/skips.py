"""Bad samples an evaluation skips: counted per reason, the first few named; reported under "skipped" in the
metrics JSON and on the console. An index with no usable sample is one clear error, not an empty score.

Reasons are the training pipeline's skip keys (`data_pipelines.errors.skip_reason`): `bad_json`,
`missing_field`, `bad_field`, `time_out_of_range` (a video too short for its record), `missing_file`,
`bad_video` (unreadable, corrupt, truncated), `invalid_input` (any other refusal of the input).
"""

from __future__ import annotations

from collections import Counter

from data_pipelines.errors import AnnotationError, skip_reason
from data_pipelines.grain.sources import JsonlSource, parse_record
from stvl_jax.errors import InputError

MAX_EXAMPLES = 5


class SkipReport:
    """Counts of skipped samples per reason and the first `max_examples` of them ({record, reason, message})."""

    def __init__(self, max_examples: int = MAX_EXAMPLES):
        self.max_examples = max_examples
        self.by_reason: Counter[str] = Counter()
        self.examples: list[dict] = []

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def add(self, record: str, reason: str, message: str) -> None:
        """`message` is prefixed with `record` unless it starts with it (AnnotationErrors name their record)."""
        self.by_reason[reason] += 1
        if len(self.examples) < self.max_examples:
            message = message if message.startswith(record) else f"{record}: {message}"
            self.examples.append({"record": record, "reason": reason, "message": message})

    def add_error(self, record: str, err: InputError) -> None:
        self.add(record, skip_reason(err), str(err))

    def as_dict(self) -> dict:
        """{"total": N, "by_reason": {reason: count}, "examples": [{"record", "reason", "message"}, ...]}"""
        return {"total": self.total, "by_reason": dict(sorted(self.by_reason.items())),
                "examples": list(self.examples)}

    def counts(self) -> str:
        return ", ".join(f"{r} {n}" for r, n in sorted(self.by_reason.items()))

    def summary(self, scored: int) -> str:
        """One console line: how many were scored and skipped, per reason, and the first skipped record."""
        if not self.total:
            return f"skipped 0 samples ({scored} scored)"
        first = self.examples[0]
        return f"skipped {self.total} of {scored + self.total} samples ({self.counts()}); first: {first['message']}"

    def require_usable(self, n_usable: int, what: str) -> None:
        """UserError (one line with the reasons) when nothing in `what` could be scored."""
        if n_usable == 0:
            detail = f": all {self.total} skipped ({self.counts()}; first: {self.examples[0]['message']})" \
                if self.total else ": it holds no sample"
            raise InputError(f"no usable sample in {what}{detail}")


def read_jsonl(path: str, skips: SkipReport, limit: int | None = None) -> list[tuple[str, object]]:
    """(key "path:line", JSON value) of the first `limit` records (non-empty lines) of a JSONL index; a malformed
    line is a counted skip (`bad_json`). A missing file is an InputError."""
    source = JsonlSource(path)
    out = []
    for i in range(len(source) if limit is None else min(limit, len(source))):
        item = source[i]
        try:
            out.append((item["key"], parse_record(item)))
        except AnnotationError as e:
            skips.add_error(item["key"], e)
    return out
