"""How E.T. Bench's official evaluation (`compute_metrics.py`) reads a model's text answer.

The rules below are the official script's, quirks included (they decide the published numbers):

- `parse_segments` (tvg, epm, tal, evs, tem, gvq): every "a - b" pair of the lower-cased answer; without one, every
  "a to b" pair; without one, the first number of each line / "!"- or "?"-ended sentence that mentions "start",
  "end" or "happen" (as substrings: "weekend" counts), taken two by two (an odd last one is dropped). Each pair
  is ordered [min, max]. None if nothing.
- `parse_captioned_segments` (dvc, slc): "a - b" pairs with the text between them as captions, or
  "start time: A ... end time: B ... description: C" blocks; a span counts only when a caption longer than 5
  characters follows it (spans and captions are paired in order and the longer list is cut). Otherwise the
  fallback reads the first piece (the first line longer than 7 characters, or the first "."-ended sentence) that
  holds a time: "a - b", "m:ss" (a lone one becomes a 40 s window), "m:ss ... m:ss", two numbers, or one number
  t -> [t - 20, t + 20] ([t, t + 40] when t <= 20); times rounded to 2 decimals.
- `parse_point` (vhd): the first number of the answer.
- choices (rar, eca, rvq, gvq): see `etbench_metrics`.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"(\d+\.*\d*)\s*-\s*(\d+\.*\d*)")  # "\.*": the official pattern allows "1..5" (then fails)
_RANGE_TEXT = re.compile(r"(\d+\.*\d*\s*-\s*\d+\.*\d*)")
_TO = re.compile(r"(\d+\.*\d*)\s* to \s*(\d+\.*\d*)")
_FIRST_NUMBER = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
_KEYWORDS = ("start", "end", "happen")  # the official list's other entries contain one of these
_START = re.compile(r"(?:start(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_END = re.compile(r"(?:end(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_DESCRIPTION = re.compile(r"description: (.*)")
_BULLET = re.compile(r"\*\s*(.*)")
_START_END_PLAIN = re.compile(r"start time (\d+\.*\d*), end time (\d+\.*\d*)")
_CLOCK = re.compile(r"\d+\.*\d*:\d+\.*\d*")
_NUMBER_NOT_BEFORE_DOT = re.compile(r"\d+\.*\d*(?!\.)")
_POINT = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")
_RADIUS = 20  # seconds around a lone time in a dense caption


def parse_segments(answer: str | None) -> list[list[float]] | None:
    """Segments [[s, e], ...] (each ordered) in an answer, read as the official `tvg_format`; None if none."""
    if not isinstance(answer, str):
        return None
    text = answer.lower()
    try:
        pairs = [(float(a), float(b)) for a, b in _RANGE.findall(text)]
        pairs = pairs or [(float(a), float(b)) for a, b in _TO.findall(text)]
    except ValueError:  # "1..5 - 3": the official float() raises and the script stops
        return None
    if not pairs:
        mentions = [s for s in re.split(r"[!?\n]", text) if any(k in s for k in _KEYWORDS)]
        times = [float(found[0]) for s in mentions if (found := _FIRST_NUMBER.findall(s))]
        # (the official "hh:mm:ss" branch after this one never yields a pair: it runs only when fewer than two
        # sentences gave a number, and a sentence with "hh:mm:ss" always gives one)
        pairs = list(zip(times[0::2], times[1::2]))
    return [[min(a, b), max(a, b)] for a, b in pairs] or None


def parse_captioned_segments(answer: str | None) -> tuple[list[list[float]], list[str]] | None:
    """(segments, captions) of a dense-captioning answer, read as the official `dvc_format`; None if none."""
    if not isinstance(answer, str):
        return None
    try:
        spans, captions = _paragraph(answer)
    except ValueError:
        return None  # the official reader gives up on the whole answer when a number does not parse
    if not spans:
        spans, captions = _first_timed_piece(answer)
    if not spans:
        return None
    return [[min(s), max(s)] for s in spans], captions


def _paragraph(answer: str) -> tuple[list[list[float]], list[str]]:
    text = answer.lower()
    spans: list[list[float]] = []
    captions: list[str] = []
    if found := _RANGE.findall(text):
        spans = [[float(a), float(b)] for a, b in found]
        rest = text
        for span_text in _RANGE_TEXT.findall(text):
            rest = rest.replace(span_text, "\n")
        captions = rest.replace("seconds", "").split("\n")
    else:
        starts, ends = _START.findall(text), _END.findall(text)
        if starts and ends:
            spans = [[float(a), float(b)] for a, b in zip(starts, ends)]
            captions = _DESCRIPTION.findall(text) or _BULLET.findall(text)
        elif _START_END_PLAIN.findall(text):
            # the official branch for "start time A, end time B" ends in a failing assert: no answer
            raise ValueError("start time / end time without colons")
    captions = [c.strip().strip(", ").rstrip() for c in captions if len(c) > 5]
    n = min(len(spans), len(captions))
    return spans[:n], captions[:n]


def _first_timed_piece(answer: str) -> tuple[list[list[float]], list[str]]:
    """The official fallback: the first piece with a readable time gives the only span."""
    if "\n" in answer:
        pieces = [c for c in answer.split("\n") if len(c) > 7]
    else:
        pieces = [c + "." for c in answer.split(".") if len(c) > 7]
    for piece in pieces:
        parts = [p.strip(",") for p in piece.split("seconds")]
        try:
            span_text = _time_part(parts[0])
        except (ValueError, IndexError):
            continue
        if span_text is None:
            continue
        bounds = span_text.split("-")
        try:
            span = [round(float(bounds[0].strip()), 2), round(float(bounds[1].strip()), 2)]
        except (ValueError, IndexError):
            continue
        return [span], [parts[-1].strip()]
    return [], []


def _time_part(text: str) -> str | None:
    """The official `extract_time_part`: an "a - b" string for the first span found in `text`, or None."""
    found = re.findall(r"\d+\.*\d*\s*-\s*\d+\.*\d*", text)
    if found:
        return found[0]
    if text.count(":") == 1:
        m, s = _CLOCK.findall(text)[0].split(":")
        return _window(int(m) * 60 + int(s))
    if text.count(":") == 2:
        start, end = _CLOCK.findall(text)  # more or fewer than two raise, as in the official code
        return f"{_seconds(start)} - {_seconds(end)}"
    numbers = _NUMBER_NOT_BEFORE_DOT.findall(text)
    if len(numbers) == 1:
        return _window(float(numbers[0]))
    if len(numbers) == 2:
        return f"{numbers[0]} - {numbers[1]}"
    return None


def _seconds(clock: str) -> int:
    m, s = clock.split(":")
    return int(m) * 60 + int(s)


def _window(t: float) -> str:
    """A lone time t -> 't-20 - t+20', or 't - t+40' when t <= 20 (formatted as the official f-string)."""
    return f"{t - _RADIUS} - {t + _RADIUS}" if t > _RADIUS else f"{t} - {t + 2 * _RADIUS}"


def parse_point(answer: str | None) -> float | None:
    """vhd: the first (signed) number of the answer, None if there is none."""
    found = _POINT.search(answer) if isinstance(answer, str) else None
    return float(found.group(0)) if found else None
