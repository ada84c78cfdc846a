"""The official E.T. Bench answer readers, rule by rule, on hand-worked answers (expected values worked out from
the official `compute_metrics.py` rules, not from this code)."""

import pytest

from stvl_jax.eval.etbench_parse import parse_captioned_segments, parse_point, parse_segments


@pytest.mark.parametrize("answer, expected", [
    ("0 - 7", [[0.0, 7.0]]),
    ("10 - 0", [[0.0, 10.0]]),  # each pair ordered
    ("2.5 - 6.0 seconds, 40 - 50 seconds", [[2.5, 6.0], [40.0, 50.0]]),
    ("from 3 to 9", [[3.0, 9.0]]),  # "to" only without any "a - b"
    ("from 3 to 9, or 1 - 2", [[1.0, 2.0]]),
    # no range: the first number of each line / !?-sentence mentioning start, end or happen, paired
    ("The event starts at 12.5 seconds.\nIt ends at 20 seconds.", [[12.5, 20.0]]),
    ("It starts at 12.5 seconds. It ends at 20 seconds.", None),  # one sentence ('.' does not split): one number
    ("It starts at 2 seconds!", None),  # an odd last time is dropped
    ("weekend 5\nhappen 7\nnothing 9", [[5.0, 7.0]]),  # keywords are substrings; a line without one is ignored
    ("it happens 1 and ends 9.5", None),
    ("starts at 1\nends at 4\nstart 6", [[1.0, 4.0]]),
    ("1..5 - 3", None),  # the official float() fails on the pattern's "1..5"
    ("", None), ("soon", None), (None, None),
])
def test_segment_reader(answer, expected):
    assert parse_segments(answer) == expected


@pytest.mark.parametrize("answer, expected", [
    # "a - b" spans with the text up to the next span as caption ("seconds" removed, ", " stripped)
    ("0.0 - 10.0 seconds, a man cuts the onion.\n20.0 - 24.0 seconds, he stirs the pot.",
     ([[0.0, 10.0], [20.0, 24.0]], ["a man cuts the onion.", "he stirs the pot."])),
    # captions of 5 characters or less are dropped and spans paired with the remaining captions in order
    ("12 - 15 seconds, ok\n20 - 30 seconds, a long caption", ([[12.0, 15.0]], ["a long caption"])),
    # ...and with no span left, the fallback reads the first piece, with no caption length rule
    ("12 - 15 seconds, ok", ([[12.0, 15.0]], ["ok."])),
    # "Start time: A, End time: B. Description: C"
    ("Start time: 5s, End time: 10s. Description: a man cuts an onion.", ([[5.0, 10.0]], ["a man cuts an onion."])),
    ("starting time: 3 seconds ending time: 7 seconds\n* a bullet caption", ([[3.0, 7.0]], ["a bullet caption"])),
    ("start time 5, end time 9, a caption here", None),  # the official branch fails on its own assert
    # fallback: first line (or "."-sentence) holding a time; a lone time t -> [t-20, t+20] or [t, t+40] (t <= 20)
    ("at 30 seconds, a dog runs in the park", ([[10.0, 50.0]], ["a dog runs in the park."])),
    ("at 12 seconds, a dog runs in the park", ([[12.0, 52.0]], ["a dog runs in the park."])),
    ("5 to 10 seconds, a man cuts\n20 to 30 seconds, he stirs the pot", ([[5.0, 10.0]], ["a man cuts"])),
    ("1:10 seconds, a car drives down the street", ([[50.0, 90.0]], ["a car drives down the street."])),
    ("0:15 a car drives", ([[15.0, 55.0]], ["0:15 a car drives."])),  # no "seconds": the caption is the piece
    ("1:10 - 2:20 seconds, the man", ([[2.0, 10.0]], [":20 , the man"])),  # "10 - 2" is a span, ordered
    ("1:10 and 2:20 seconds, the man", ([[70.0, 140.0]], ["the man."])),
    ("5 and 9 seconds, he jumps high", ([[5.0, 9.0]], ["he jumps high."])),
    ("at 10s", None),  # a piece must be longer than 7 characters
    ("10 seconds", ([[10.0, 50.0]], ["."])),
    ("nothing to report", None), (None, None),
])
def test_dense_caption_reader(answer, expected):
    assert parse_captioned_segments(answer) == expected


def test_point_reader():
    assert parse_point("The highlight is at 12.5 seconds, not 20.") == 12.5
    assert parse_point("-1") == -1.0 and parse_point(".5 s") == 0.5 and parse_point("none") is None
