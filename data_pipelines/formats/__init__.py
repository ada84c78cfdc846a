"""Annotation formats of the seed systems: Streamo to-stream, STRIDE activation windows, QVHighlights Yes/No."""


def as_seconds(value) -> float:
    """A time in seconds from a number or numeric string, as float(); a bool (which float() takes as 0 or 1) is a
    TypeError, so `true` in an annotation is refused rather than read as 1 s."""
    if isinstance(value, bool):
        raise TypeError(f"a time must be a number, got {value!r}")
    return float(value)
