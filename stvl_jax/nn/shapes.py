"""Static-shape bucketing: round sizes up so jit sees a handful of shapes instead of one per batch."""

from __future__ import annotations


def bucket(n: int, minimum: int = 16, per_octave: int = 4) -> int:
    """Round n up to one of `per_octave` sizes per power of two (>= minimum): at most 1/per_octave padding,
    and few enough distinct sizes that a training run compiles a handful of programs, not one per batch."""
    if n <= minimum:
        return minimum
    step = max(1, (1 << (int(n).bit_length() - 1)) // per_octave)
    return -(-n // step) * step
