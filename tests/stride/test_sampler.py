"""STRIDE's unmasking schedule: number of steps, k per step, top-2k candidates, retain rule, unseen slots.
(The training masking modes' invariants are property-tested in tests/data_pipelines/test_stride.py.)"""

import numpy as np
import pytest

from stvl_jax.models.stride.sampler import (
    ACTIVE, INACTIVE, MASKED, NO_HISTORY, active_span, denoise, match_history, step_sizes,
)
from stride_stubs import Recorder


def test_step_sizes_split_evenly_and_drop_empty_steps():
    assert step_sizes(13, 8) == [2, 2, 2, 2, 2, 1, 1, 1]
    assert step_sizes(16, 8) == [2] * 8
    assert step_sizes(3, 8) == [1, 1, 1]
    assert step_sizes(0, 8) == []
    with pytest.raises(ValueError):
        step_sizes(4, 0)


def test_eight_steps_unmask_k_slots_each_and_never_touch_unseen_slots():
    w = 16
    p = np.linspace(0.02, 0.98, w)  # distinct confidences
    fixed = np.zeros(w, bool)
    fixed[:3] = True  # e.g. unseen slots
    stub = Recorder(p)
    out = denoise(stub, fixed, np.random.default_rng(0), steps=8, confidence=0.75, history=None)
    sizes = step_sizes(13, 8)
    assert out.forwards == len(stub.calls) == 8
    masked_counts = [int((c == MASKED).sum()) for c in stub.calls]
    assert masked_counts == [13 - sum(sizes[:i]) for i in range(8)]  # k slots leave the mask per step
    for c in stub.calls:  # fixed slots are always given as clean <inactive>
        assert (c[:3] == INACTIVE).all()
    assert (out.labels[:3] == INACTIVE).all() and (out.step_of[:3] == -1).all()
    assert set(out.labels.tolist()) <= {INACTIVE, ACTIVE}
    np.testing.assert_array_equal(out.labels[3:], (p[3:] > 0.5).astype(np.int8))


def test_each_step_picks_k_of_the_top_2k_most_confident_masked_slots():
    w = 12
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, w)
    stub = Recorder(p)
    out = denoise(stub, np.zeros(w, bool), np.random.default_rng(7), steps=3, confidence=None)
    conf = np.maximum(p, 1 - p)
    for step, k in enumerate(step_sizes(w, 3), start=1):
        masked = np.flatnonzero(stub.calls[step - 1] == MASKED)
        chosen = np.flatnonzero(out.step_of == step)
        assert len(chosen) == k
        # the 2k most confident of the masked slots (by hand: sort the masked confidences)
        top = set(masked[np.argsort(-conf[masked])[: 2 * k]].tolist())
        assert set(chosen.tolist()) <= top


def test_choice_among_candidates_is_random_but_seeded():
    p = np.full(10, 0.9)  # all tied: candidates = argpartition's pick, choice decides
    runs = [denoise(Recorder(p), np.zeros(10, bool), np.random.default_rng(s), steps=5, confidence=None).step_of
            for s in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_retain_keeps_history_values_the_model_agrees_with():
    # |p - v| < 0.25 keeps v: slot 0 (|0.9-1|), slot 2 (|0.1-0|), slot 5 (|0.8-1|); not slot 1 (|0.6-1|),
    # slot 3 (|0.3-1|), slot 4 (no history) nor slot 6 (fixed, and |0.2-1| >= 0.25)
    p = np.array([0.9, 0.6, 0.1, 0.3, 0.95, 0.8, 0.2], np.float32)
    hist = np.array([1, 1, 0, 1, NO_HISTORY, 1, 1], np.int8)
    fixed = np.array([0, 0, 0, 0, 0, 0, 1], bool)
    stub = Recorder(p)
    out = denoise(stub, np.zeros(7, bool), np.random.default_rng(0), fixed=fixed, steps=8, confidence=0.75,
                  history=hist)
    assert out.retained == 3
    np.testing.assert_array_equal(np.flatnonzero(out.step_of == 0), [0, 2, 5])
    # baseline forward (everything but the fixed slot masked) + the 7 seen slots spread over 8 steps
    # ([1]*7), each capped at what is still masked: 3 steps of 1
    assert out.forwards == 1 + 3
    assert (stub.calls[0][:6] == MASKED).all() and stub.calls[0][6] == INACTIVE
    assert stub.calls[1][[0, 2, 5]].tolist() == [ACTIVE, INACTIVE, ACTIVE]
    assert out.labels.tolist() == [1, 1, 0, 0, 1, 1, 0]


def test_no_retain_step_without_history_or_threshold():
    p = np.full(4, 0.9)
    hist = np.ones(4, np.int8)
    assert denoise(Recorder(p), np.zeros(4, bool), np.random.default_rng(0), steps=2, confidence=None,
                   history=hist).forwards == 2
    assert denoise(Recorder(p), np.zeros(4, bool), np.random.default_rng(0), steps=2, confidence=0.75,
                   history=None).forwards == 2
    # a history that matches no slot still costs the baseline forward (the reference runs it whenever its
    # history dict is non-empty)
    all_none = np.full(4, NO_HISTORY, np.int8)
    assert denoise(Recorder(p), np.zeros(4, bool), np.random.default_rng(0), steps=2, confidence=0.75,
                   history=all_none).forwards == 3


def test_history_by_time_overlap_and_span():
    prev = np.array([0.0, 1.0, 2.0, 3.0])
    # whole-slot shift: one previous slot per slot
    got = match_history(prev, np.array([1, 0, 1, 1]), prev + 1, prev + 2, 1.0)
    assert got.tolist() == [0, 1, 1, NO_HISTORY]
    # half-slot shift: [0.5, 1.5) overlaps [0, 1) (1) and [1, 2) (0) -> no consensus; [1.5, 2.5) overlaps
    # [1, 2) (0) and [2, 3) (0) -> 0; [2.5, 3.5) overlaps 1 and 1 -> 1; [3.5, 4.5) overlaps only [3, 4) -> 1
    got = match_history(prev, np.array([1, 0, 0, 1]), prev + 0.5, prev + 1.5, 1.0)
    assert got.tolist() == [NO_HISTORY, INACTIVE, NO_HISTORY, ACTIVE]
    got = match_history(prev, np.array([1, 1, 1, 1]), prev + 0.5, prev + 1.5, 1.0)
    assert got.tolist() == [1, 1, 1, 1]
    starts = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert active_span(np.array([0, 1, 0, 1, 0]), starts, starts + 1) == (-1.0, 2.0)
    assert active_span(np.zeros(5), starts, starts + 1) is None
