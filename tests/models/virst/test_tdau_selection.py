"""VIRST's anchors and memory selection, against hand-built cases: anchor_frames_for == upstream's torch
expression; the training anchors (upstream `select_keyframes(is_evaluation=False)`: sorted randperm(T)[:3]); the
processing orders (static and traced); which anchors, FIFO frames (temporal-embedding rows) and object pointers
(temporal offsets) a frame attends to (Meta's rule with 3 anchors in attention, as VIRST runs it); one-line
errors for bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from stvl_jax.errors import InputError
from stvl_jax.models.sam2.memory_bank import MemoryBank, select_memory_frames
from stvl_jax.models.sam2.memory_config import MemoryBankConfig
from stvl_jax.models.virst.tdau import (anchor_frames_for, memory_schedule, processing_order, segment_with_anchors,
                                        train_anchor_frames, training_order)

VIRST_BANK = MemoryBankConfig()  # num_maskmem 7, max_object_pointers_in_encoder 16 (SAM2.1, as VIRST)


def test_anchor_frames_by_hand():
    assert anchor_frames_for(1) == anchor_frames_for(7) == (0,)
    assert anchor_frames_for(8) == (0, 7)
    assert anchor_frames_for(32) == (0, 4, 9, 13, 18, 22, 27, 31)  # 31/7 = 4.43 apart
    assert anchor_frames_for(20) == (0, 5, 10, 14, 19)  # 4.75 apart: 9.5 rounds to even 10
    assert anchor_frames_for(28) == (0, 4, 9, 14, 18, 22, 27)  # 4.5 apart: 4.5 -> 4, 13.5 -> 14, 22.5 -> 22
    with pytest.raises(InputError, match="t_seg 0"):
        anchor_frames_for(0)


def test_anchor_frames_match_upstreams_torch_expression():
    torch = pytest.importorskip("torch")
    for t in range(1, 300):  # VIRST.select_keyframes(is_evaluation=True)
        want = torch.linspace(0, t - 1, steps=max(1, t // 4)).round().long().tolist()
        assert anchor_frames_for(t) == tuple(want), t


def test_processing_orders():
    frames, anchor = processing_order(6, (1, 4), training=False)
    assert frames.tolist() == [1, 4, 0, 2, 3, 5] and anchor.tolist() == [0, 1, -1, -1, -1, -1]
    frames, anchor = processing_order(6, (1, 4), training=True)
    assert frames.tolist() == [1, 0, 2, 3, 4, 5] and anchor.tolist() == [0, -1, -1, -1, 1, -1]


def _at(rows, frame):
    (row,) = [r for r in rows if r["frame"] == frame]
    return row


def test_evaluation_selection_by_hand():
    # T = 20, anchors (0, 5, 10, 14, 19) all encoded first, then frames 1, 2, 3, 4, 6, ... tracked forward
    rows = memory_schedule(20, anchor_frames_for(20), VIRST_BANK, training=False)
    assert [r["frame"] for r in rows] == [0, 5, 10, 14, 19, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 18]
    assert all(r["anchor"] and not r["anchors"] and not r["fifo"] and not r["pointers"] for r in rows[:5])
    r = _at(rows, 3)
    assert r["anchors"] == (0, 5, 10)  # before 0, after 5, then the closest other (10)
    assert r["fifo"] == {2: 0, 1: 1}  # frame 0 is a selected anchor: its FIFO slot stays empty
    assert r["pointers"] == {0: 3, 2: 1, 1: 2}  # past anchors only at evaluation
    r = _at(rows, 12)
    # before 10, after 14; 5 and 19 are both 7 away: the earlier inserted (5) wins
    assert r["anchors"] == (5, 10, 14)
    assert r["fifo"] == {11: 0, 9: 2, 8: 3, 7: 4, 6: 5}  # previous 6 frame indices minus selected anchor 10
    # pointers: selected past anchors 5, 10 (signed offsets), then frames 1..15 back that are tracked or an
    # unselected anchor (frame 0, 12 back); 14 is in the future
    assert r["pointers"] == {5: 7, 10: 2, 11: 1, 9: 3, 8: 4, 7: 5, 6: 6, 4: 8, 3: 9, 2: 10, 1: 11, 0: 12}
    r = _at(rows, 17)
    assert r["anchors"] == (10, 14, 19)
    assert r["fifo"] == {16: 0, 15: 1, 13: 3, 12: 4, 11: 5}
    assert r["pointers"] == {10: 7, 14: 3, 16: 1, 15: 2, 13: 4, 12: 5, 11: 6, 9: 8, 8: 9, 7: 10, 6: 11, 5: 12,
                             4: 13, 3: 14, 2: 15}  # 15 back at most: min(T, 16) - 1


def test_training_selection_by_hand():
    # T = 12, anchors (1, 4, 8, 10): order 1, 0, 2, 3, 4, 5, ...; later anchors join when reached
    rows = memory_schedule(12, (1, 4, 8, 10), VIRST_BANK, training=True)
    assert [(r["frame"], r["anchor"]) for r in rows][:6] == [(1, True), (0, False), (2, False), (3, False),
                                                               (4, True), (5, False)]
    r = _at(rows, 0)
    assert r["anchors"] == (1,) and r["fifo"] == {} and r["pointers"] == {1: -1}  # training: future anchor too
    r = _at(rows, 3)
    assert r["anchors"] == (1,) and r["fifo"] == {2: 0, 0: 2}  # anchor 4 is not encoded yet
    r = _at(rows, 6)
    assert r["anchors"] == (1, 4) and r["fifo"] == {5: 0, 3: 2, 2: 3, 0: 5}
    assert r["pointers"] == {1: 5, 4: 2, 5: 1, 3: 3, 2: 4, 0: 6}
    r = _at(rows, 11)
    # before 10, none after, then 8 (3 away) and 4 (7); anchor 1 is unselected: a pointer like a tracked frame
    assert r["anchors"] == (4, 8, 10) and r["fifo"] == {9: 1, 7: 3, 6: 4, 5: 5}
    assert r["pointers"] == {4: 7, 8: 3, 10: 1, 9: 2, 7: 4, 6: 5, 5: 6, 3: 8, 2: 9, 1: 10, 0: 11}


def test_transformers_pointer_rule_is_still_the_default():
    # the same bank as frame 12 above: transformers takes every past conditioning frame's pointer and only
    # tracked frames among the previous ones (memory_bank's default, unchanged for the tracker)
    import jax.numpy as jnp

    bank = MemoryBank.empty(20, 1, 1, 1, dtype=jnp.float32)
    for f in (0, 5, 10, 14, 19):
        bank = bank.store(f, jnp.zeros((1, 1)), jnp.zeros((1,)), True)
    for f in (1, 2, 3, 4, 6, 7, 8, 9, 11):
        bank = bank.store(f, jnp.zeros((1, 1)), jnp.zeros((1,)), False)
    _, (pf, po, ok), _ = select_memory_frames(bank, 12, VIRST_BANK, cond_capacity=5, num_frames=20,
                                              max_cond_frame_num=3)
    got = {int(a): int(b) for a, b in zip(np.asarray(pf)[np.asarray(ok)], np.asarray(po)[np.asarray(ok)])}
    assert got == {0: 12, 5: 7, 10: 2, 11: 1, 9: 3, 8: 4, 7: 5, 6: 6, 4: 8, 3: 9, 2: 10, 1: 11}


class _Cfg:  # the fields segment_with_anchors checks before computing anything
    image_size, memory_bank = 64, MemoryBankConfig(hidden_dim=128)


class _Model:
    config = _Cfg()


@pytest.mark.parametrize("frames, anchors, prompts, match", [
    ((4, 3, 32, 32), (0,), (1, 1, 2, 128), "pixel_values has shape"),
    ((4, 3, 64, 64), (0, 4), (1, 2, 2, 128), "strictly increasing frame indices within the 4 frames"),
    ((4, 3, 64, 64), (2, 1), (1, 2, 2, 128), "strictly increasing"),
    ((4, 3, 64, 64), (), (1, 0, 2, 128), "strictly increasing"),
    ((4, 3, 64, 64), (0, 2), (1, 3, 2, 128), r"expected \(objects, 2 anchors, queries, 128\)"),
    ((4, 3, 64, 64), (0, 2), (1, 2, 2, 64), "anchor_prompts has shape"),
])
def test_bad_inputs_are_one_line(frames, anchors, prompts, match):
    with pytest.raises(InputError, match=match) as e:
        segment_with_anchors(_Model(), np.zeros(frames, np.float32), anchors, np.zeros(prompts, np.float32),
                             multimask=True)
    assert "\n" not in str(e.value)


class _Perm:
    """An rng whose permutation is written out: upstream's randperm(10) = [7, 2, 9, 0, ...]."""

    def permutation(self, n):
        return np.array([7, 2, 9, 0, 1, 3, 4, 5, 6, 8])[:n] if n == 10 else np.arange(n)[::-1]


def test_training_anchors_by_hand():
    assert train_anchor_frames(10, _Perm()) == (2, 7, 9)  # the first 3 of the permutation, sorted
    assert train_anchor_frames(10, _Perm(), count=2) == (2, 7)
    assert train_anchor_frames(10, _Perm(), count=20) == tuple(range(10))  # min(count, T): every frame
    assert train_anchor_frames(3, _Perm()) == (0, 1, 2) and train_anchor_frames(2, _Perm()) == (0, 1)
    assert train_anchor_frames(1, _Perm()) == (0,)  # upstream's T == 1 branch
    with pytest.raises(InputError, match="t_seg 0"):
        train_anchor_frames(0, _Perm())


def test_training_anchors_are_seeded_and_uniform():
    draws = [train_anchor_frames(4, np.random.default_rng([0, step])) for step in range(2000)]
    assert draws == [train_anchor_frames(4, np.random.default_rng([0, step])) for step in range(2000)]
    assert draws[:40] != [train_anchor_frames(4, np.random.default_rng([1, step])) for step in range(40)]
    # 3 of 4 frames: each of the C(4, 3) = 4 subsets (each missing one frame) has probability 1/4
    assert all(len(d) == 3 and len(set(d)) == 3 and list(d) == sorted(d) for d in draws)
    missing = np.bincount([6 - sum(d) for d in draws], minlength=4) / len(draws)
    np.testing.assert_allclose(missing, 0.25, atol=0.04)


@pytest.mark.parametrize("t, anchors, frames, index", [
    (6, (1, 4), [1, 0, 2, 3, 4, 5], [0, -1, -1, -1, 1, -1]),  # = processing_order(6, (1, 4), training=True)
    (6, (2, 5), [2, 0, 1, 3, 4, 5], [0, -1, -1, -1, -1, 1]),
    (5, (0, 3, 4), [0, 1, 2, 3, 4], [0, -1, -1, 1, 2]),
    (4, (3,), [3, 0, 1, 2], [0, -1, -1, -1]),
])
def test_training_order_of_traced_anchors_by_hand(t, anchors, frames, index):
    import jax
    import jax.numpy as jnp

    got = np.asarray(jax.jit(training_order, static_argnums=0)(t, jnp.asarray(anchors, jnp.int32)))
    assert got[0].tolist() == frames and got[1].tolist() == index


def test_traced_anchors_are_training_only_and_one_line():
    import jax.numpy as jnp

    pixels, prompts = np.zeros((4, 3, 64, 64), np.float32), np.zeros((1, 2, 2, 128), np.float32)
    with pytest.raises(InputError, match="training order") as e:
        segment_with_anchors(_Model(), pixels, jnp.asarray([0, 2]), prompts, multimask=True)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"expected \(anchors,\) integer"):
        segment_with_anchors(_Model(), pixels, jnp.asarray([[0, 2]]), prompts, multimask=False)
