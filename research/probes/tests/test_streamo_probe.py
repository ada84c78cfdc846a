"""The pair probe's binding breakdown (research/probes/streamo_visual_probe.py): which block a stream's predicted
`</Standby>` seconds follow, split by which block shows first."""

import json
import os
import sys

from research.probes.streamo_visual_probe import pair_following

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
    from research.probes.streamo_visual_probe import write_probe_streams

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
            assert line.startswith(" "), line  # so the first colour word is the question's token, see below
            line = line[1:]
            described = set() if line == "nothing." else set(line.replace(" block", "").rstrip(".").split(". "))
            assert described == shown, (t, line, shown)


def test_pair_text_colour_words_are_the_questions_tokens(tmp_path):
    """The LLM should only have to match a colour token, not learn that a split word ("r" "ed" at the start
    of a line, with the tiny tokenizer) is the question's " red"."""
    from research.probes.streamo_visual_probe import write_probe_streams
    from transformers import AutoTokenizer

    from data_pipelines.tokenizer import build_tiny_tokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path / "tok")))
    colour = {c: tok(f" {c}")["input_ids"] for c in ("red", "blue")}
    assert all(len(ids) == 1 for ids in colour.values())
    text = write_probe_streams("pair_text", str(tmp_path / "text"), 10, "sys")
    with open(text["train"]) as f:
        rows = [json.loads(line) for line in f]
    seen = 0
    for row in rows:
        for m in row["messages"]:
            if m["role"] != "user":
                continue
            ids = tok(m["content"])["input_ids"]
            for c, (cid,) in colour.items():
                n = m["content"].count(c)
                assert ids.count(cid) == n, (m["content"], c)
                seen += n
    assert seen > 0


def test_pair_caption_streams_answer_each_second_with_its_line(tmp_path):
    """The caption warm-up shows the pair videos (same draws) and answers every second with pair_text's line."""
    from research.probes.streamo_visual_probe import write_probe_streams

    cap = write_probe_streams("pair_caption", str(tmp_path / "cap"), 10, "sys")
    text = write_probe_streams("pair_text", str(tmp_path / "text"), 10, "sys")
    with open(cap["train"]) as f, open(text["train"]) as g:
        pairs = [(json.loads(a), json.loads(b)) for a, b in zip(f, g, strict=True)]
    for c, t in pairs:
        assert os.path.isfile(c["videos"][0]) and c["pair_spans"] == t["pair_spans"]
        assert c["messages"][1]["content"].startswith("What is shown?\n<0s-1s>\n<stream>")
        answers = [m["content"] for m in c["messages"] if m["role"] == "assistant"]
        lines = [m["content"].split("\n")[-1] for m in t["messages"] if m["role"] == "user"]
        assert answers == lines


def test_warm_ups_train_on_frames(monkeypatch):
    """pair_caption is a warm-up only (no states to score); pair_text cannot be one (no frames)."""
    import pytest
    from research.probes.streamo_visual_probe import PROBES, WARMUPS
    from research.probes.stride_visual_probe import probe_args

    monkeypatch.setattr(sys, "argv", ["probe", "--probes", "pair", "--warmup-probe", "pair_caption"])
    assert probe_args("doc", PROBES, WARMUPS).warmup_probe == "pair_caption"
    for argv in (["--probes", "pair_caption"], ["--probes", "pair", "--warmup-probe", "pair_text"]):
        monkeypatch.setattr(sys, "argv", ["probe", *argv])
        with pytest.raises(SystemExit):
            probe_args("doc", PROBES, WARMUPS)
    monkeypatch.setattr(sys, "argv", ["probe"])
    assert "pair_caption" not in probe_args("doc", PROBES, WARMUPS).probes  # not in the default run


def test_binding_counts_separate_the_first_second_from_copying_the_previous_state():
    """Only the other block's first second needs the colour word; later ones follow from the gold state before."""
    from research.probes.streamo_visual_probe import binding_counts

    R = "</Response>"
    spans = {"named": (6, 8), "other": (2, 5)}
    copies = [Q, Q, S, Q, Q, Q, S, S, R, Q]  # fires at the other block, then copies the gold Silence
    binds = [Q, Q, Q, Q, Q, Q, S, S, R, Q]
    assert binding_counts(copies, spans) == {"other block, first second": [0, 1], "other block, later seconds": [2, 2],
                                             "named block, first second": [1, 1]}
    assert binding_counts(binds, spans)["other block, first second"] == [1, 1]
    assert binding_counts(binds, {"named": (1, 3), "other": (2, 5)})["other block, first second"] == [0, 0]


def test_pair_align_outputs_the_colour_words_embedding_at_each_block(tmp_path):
    """The aligned-vision warm-up: a red block's merged token ~ the LLM's own " red" input embedding, 0 elsewhere."""
    import numpy as np
    from research.probes.streamo_visual_probe import aligned_vision_start, pair_frame
    from transformers import AutoTokenizer

    from stvl_jax.models.qwen_vl.host.preprocess import process_images
    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax import load_model
    from stvl_jax.demo.streamo import TRAIN_CONFIG
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs

    tok_dir = build_tiny_tokenizer(str(tmp_path / "tok"))
    overrides, mse = aligned_vision_start(TRAIN_CONFIG, tok_dir, str(tmp_path), steps=150, batch=16)
    assert "optim.groups.merger.train=false" in overrides
    model = load_model(overrides[1].split("=", 1)[1])
    red = AutoTokenizer.from_pretrained(tok_dir).encode(" red", add_special_tokens=False)[0]
    word = np.asarray(model.language_model.embed_tokens.embedding[...])[red]
    pv, grid = process_images(pair_frame(True, False, (2, 0))[None], model.preprocessing)  # the recipe's 56 x 56
    tokens = np.asarray(model.visual(prepare_vision_inputs(model.config, pixel_values=pv, image_grid_thw=grid))[0])
    assert tokens.shape == (4, word.size)
    assert np.linalg.norm(tokens[2] - word) < 0.05 * np.linalg.norm(word), mse  # 0.02 measured
    assert all(np.linalg.norm(tokens[q]) < 0.05 * np.linalg.norm(word) for q in (0, 1, 3))  # <= 0.007
