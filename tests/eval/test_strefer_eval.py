"""Strefer evaluation bookkeeping by hand: answer normalization, accuracy per family beside the controls, the
printed table. (Prompts, generation and the CLI on engine output: tests/data_pipelines/strefer_engine.)"""

import pytest

from stvl_jax.eval.strefer_eval import format_table, normalize_answer, score


@pytest.mark.parametrize("a,b,same", [
    ("From <0> to <11>.", "from <0>  to <11>", True),
    ("Two.", " two ", True),
    ("Yes", "Yes.", True),
    ("At <4>.", "At <5>.", False),      # time tokens must match exactly
    ("At <4>.", "At <4> .", True),      # spaces before the final period do not count
    ("Two.", "Three.", False),
])
def test_normalize(a, b, same):
    assert (normalize_answer(a) == normalize_answer(b)) is same


def _item(family, answer):
    return {"pair": {"family": family, "answer": answer}}


def test_accuracy_per_family_and_overall_by_hand():
    items = [_item("counting", "Two."), _item("counting", "One."), _item("counting", "Two."),
             _item("timestamp_yesno", "Yes"), _item("timestamp_yesno", "No")]
    answers = {"model": ["two", "One.", "Three.", "Yes", "Yes"],   # counting 2/3, yes/no 1/2, all 3/5
               "no_frames": ["Two.", "Two.", "Two.", "No", "No"]}  # counting 2/3, yes/no 1/2, all 3/5
    table = score(items, answers)
    assert list(table) == ["counting", "timestamp_yesno", "all"]
    assert table["counting"] == {"n": 3, "accuracy": {"model": pytest.approx(2 / 3), "no_frames": pytest.approx(2 / 3)}}
    assert table["timestamp_yesno"]["accuracy"] == {"model": 0.5, "no_frames": 0.5}
    assert table["all"] == {"n": 5, "accuracy": {"model": pytest.approx(0.6), "no_frames": pytest.approx(0.6)}}


def test_table_has_one_column_per_condition():
    table = {"counting": {"n": 3, "accuracy": {"model": 2 / 3, "black_frames": 0.0}},
             "all": {"n": 3, "accuracy": {"model": 2 / 3, "black_frames": 0.0}}}
    lines = format_table(table, ["model", "black_frames"]).splitlines()
    assert lines[0].split() == ["family", "n", "model", "black", "frames"]
    assert lines[2].split() == ["counting", "3", "0.667", "0.000"] and lines[3].split()[0] == "all"
