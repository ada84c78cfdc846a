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


def test_other_clip_control_takes_as_long_a_clip_of_another_video():
    from stvl_jax.eval.strefer_eval import other_clip_parts

    def item(cid, path, start, end):
        return {"clip_id": cid, "video": {"type": "video", "path": path, "start": start, "end": end,
                                          "relative_times": True}}

    items = [item("a/s000c000", "a.mp4", 0.0, 8.0), item("a/s000c001", "a.mp4", 8.0, 13.0),
             item("b/s000c000", "b.mp4", 0.0, 4.0), item("c/s000c000", "c.mp4", 2.0, 10.0)]
    got = other_clip_parts(items + items[:1])  # a clip asked several questions appears once
    # a/c000 (8 s): b is too short, c lasts 8 s; a/c001 (5 s): b too short, c; b (4 s): c, first 4 s of it;
    # c (8 s): a/c000 (the next of another video, cyclic)
    assert {k: (v["path"], v["start"], v["end"]) for k, v in got.items()} == {
        "a/s000c000": ("c.mp4", 2.0, 10.0), "a/s000c001": ("c.mp4", 2.0, 7.0), "b/s000c000": ("c.mp4", 2.0, 6.0),
        "c/s000c000": ("a.mp4", 0.0, 8.0)}
    assert all(v["relative_times"] and v["type"] == "video" for v in got.values())
    assert other_clip_parts(items[:2]) is None  # one video: no clip of another one
