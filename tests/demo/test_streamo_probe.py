"""The pair probe's binding breakdown (benchmarks/streamo_visual_probe.py): which block a stream's predicted
`</Standby>` seconds follow, split by which block shows first."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

from streamo_visual_probe import pair_following  # noqa: E402

S, Q = "</Standby>", "</Silence>"


def test_pair_following_tells_binding_from_tracking_the_first_block(tmp_path):
    cases = [  # (named span, other span, predicted Standby seconds)
        ((1, 3), (4, 6), {1, 2}),     # named first, followed
        ((4, 6), (1, 3), {1, 2}),     # other first, followed: tracks the first block
        ((4, 6), (1, 3), {4, 5}),     # other first, named followed: binds
        ((2, 4), (2, 5), {2}),        # same start, neither
    ]
    streams, result = tmp_path / "test.jsonl", {"streams": []}
    with open(streams, "w") as f:
        for i, (named, other, on) in enumerate(cases):
            f.write(json.dumps({"videos": [f"v{i}.mp4"], "pair_spans": {"named": named, "other": other}}) + "\n")
            result["streams"].append({"video": f"v{i}.mp4", "pred": [S if t in on else Q for t in range(8)]})
    assert pair_following(str(streams), result) == {
        "named first": {"named": 1, "other": 0, "neither": 0},
        "other first": {"named": 1, "other": 1, "neither": 0},
        "same start": {"named": 0, "other": 0, "neither": 1},
    }


def test_pair_text_streams_are_the_pair_streams_with_each_frame_as_a_line(tmp_path):
    from streamo_visual_probe import write_probe_streams

    text = write_probe_streams("pair_text", str(tmp_path / "text"), 10, "sys")
    with open(text["train"]) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        assert "videos" not in row
        named, other = row["pair_spans"]["named"], row["pair_spans"]["other"]
        named_colour = "red" if "red" in row["messages"][1]["content"].split("\n")[0] else "blue"
        other_colour = "blue" if named_colour == "red" else "red"
        lines = [m["content"].split("\n")[-1] for m in row["messages"] if m["role"] == "user"]
        assert len(lines) == 20  # one per second
        for t, line in enumerate(lines):
            shown = {c for c, (a, b) in ((named_colour, named), (other_colour, other)) if a <= t < b}
            described = set() if line == "nothing." else set(line.replace(" block", "").rstrip(".").split(". "))
            assert described == shown, (t, line, shown)
