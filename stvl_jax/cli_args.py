"""argparse value types that refuse out-of-range numbers at parse time.

argparse reports a rejected value as `argument --flag: <message>` with the usage line and exit status 2, so a
bad number names its flag instead of surfacing later as a traceback (or, worse, as silently wrong output:
`--fps 0` made every Streamo time 0). `output_dir` refuses an output directory path that is an existing file.
"""

from __future__ import annotations

import argparse
import math
import os


def _number(kind, text: str, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0, "a number >= 0")


def probability(text: str) -> float:
    return _number(float, text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def output_dir(text: str) -> str:
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return text


def mesh_shape(text: str) -> tuple[int, int, int]:
    """`data,fsdp,tensor` sizes: three positive integers, one of them may be -1 (the remaining devices)."""
    what = "three integers data,fsdp,tensor (each >= 1, or one -1)"
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if len(sizes) != 3 or any(s < 1 and s != -1 for s in sizes) or sizes.count(-1) > 1:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return sizes
