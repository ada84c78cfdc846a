"""STRIDE windows: slot GT (first-wins), categories, and the masking-mode invariants over many seeds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipelines.errors import AnnotationError
from data_pipelines.formats.stride import (
    ActivationEntry, StrideWindowConfig, activation_text, augment_unseen_mask, build_window, generate_mask,
    slot_bounds, slot_ground_truth,
)


def test_slot_bounds_end_at_last_frame():
    s, e = slot_bounds(10.0, StrideWindowConfig(window=4, resolution=1.0))
    assert s.tolist() == [6.0, 7.0, 8.0, 9.0] and e.tolist() == [7.0, 8.0, 9.0, 10.0]


def test_first_wins_and_inclusive_overlap():
    s, e = slot_bounds(6.0, StrideWindowConfig(window=6))  # slots [0,1) .. [5,6)
    entries = [ActivationEntry(2.5, 3.5, "<active>", True), ActivationEntry(0.0, 3.0, "<inactive>", False)]
    gt, flag = slot_ground_truth(entries, s, e)
    # active overlaps slots [2,3) and [3,4) (and [1,2)? end 2 >= 2.5 no); inactive takes 0,1 (slot 2 already taken)
    assert gt.tolist() == [0, 0, 1, 1, 0, 0]
    assert flag.tolist() == [False, False, True, True, True, True]
    # touching boundary counts as overlap: slot [1,2) vs entry starting at 2.0
    gt2, _ = slot_ground_truth([ActivationEntry(2.0, 2.0, "<active>", True)], s, e)
    assert gt2.tolist() == [0, 1, 1, 0, 0, 0]


def test_categories_unseen_fixed_maskable():
    cfg = StrideWindowConfig(window=8, mask_modes=(1,))
    entries = [ActivationEntry(1.0, 2.0, "<active>", True), ActivationEntry(-5, 0.5, "<inactive>", False)]
    w = build_window(entries, 3.0, cfg, np.random.default_rng(0))  # slots [-5,-4) .. [2,3)
    assert w.unseen.tolist() == [True, True, True, True, False, False, False, False]
    # the active entry [1, 2] comes first and wins slots [0,1), [1,2), [2,3) (inclusive overlap);
    # slot [-1,0) ends at 0 -> seen (unseen is end < 0) and goes to the fixed inactive entry
    assert w.gt.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert w.fixed.tolist() == [False, False, False, False, True, False, False, False]
    assert not w.mask[w.fixed].any()
    assert (w.gt[w.unseen] == 0).all()
    assert w.mask[w.maskable].all()  # mode 1


def test_no_maskable_slot_is_an_annotation_error():
    cfg = StrideWindowConfig(window=4)
    with pytest.raises(AnnotationError) as e:
        build_window([ActivationEntry(0, 10, "<inactive>", False)], 4.0, cfg, np.random.default_rng(0))
    assert e.value.reason == "no_maskable_slots"


gts = st.lists(st.integers(0, 1), min_size=1, max_size=40).map(np.array)
contiguous_gts = st.tuples(st.integers(1, 40), st.integers(0, 39), st.integers(1, 40)).map(
    lambda t: (lambda n, a, L: np.array([1 if a <= i < a + L else 0 for i in range(n)]))(*t))


@given(gt=st.one_of(gts, contiguous_gts), seed=st.integers(0, 2**31))
@settings(max_examples=300, deadline=None)
def test_mode1_masks_everything(gt, seed):
    mask, mode, b = generate_mask(gt, np.random.default_rng(seed), mode=1)
    assert mode == 1 and mask.all() and b == len(gt)


@given(gt=st.one_of(gts, contiguous_gts), seed=st.integers(0, 2**31))
@settings(max_examples=400, deadline=None)
def test_mode2_budget_gaps_and_boundary(gt, seed):
    n = len(gt)
    mask, mode, b = generate_mask(gt, np.random.default_rng(seed), mode=2)
    active = np.flatnonzero(gt == 1)
    if n == 1 and len(active):
        assert mode == 0 and mask.sum() == 1  # fallback
        return
    assert mode == 2
    assert 1 <= b <= max(1, int(0.3 * n))
    assert int((~mask).sum()) == b  # exactly the budget is revealed
    if len(active):
        boundary = {active[0], active[-1], active[0] - 1, active[-1] + 1}
        assert any(mask[i] for i in boundary if 0 <= i < n)


@given(gt=st.one_of(gts, contiguous_gts), seed=st.integers(0, 2**31))
@settings(max_examples=400, deadline=None)
def test_mode3_exact_budget_and_block_touches_active_boundary(gt, seed):
    n = len(gt)
    mask, mode, m = generate_mask(gt, np.random.default_rng(seed), mode=3)
    assert mode == 3 and 1 <= m <= n and int(mask.sum()) == m
    active = np.flatnonzero(gt == 1)
    if m > 1 and len(active):
        assert mask[active[0]] or mask[active[-1]]


@given(gt=st.one_of(gts, contiguous_gts), seed=st.integers(0, 2**31), budget=st.integers(1, 12))
@settings(max_examples=200, deadline=None)
def test_fixed_budgets_are_respected(gt, seed, budget):
    n = len(gt)
    b3 = min(budget, n)
    assert generate_mask(gt, np.random.default_rng(seed), mode=3, budget=b3)[0].sum() == b3
    b2 = min(budget, max(1, int(0.3 * n)))
    mask, mode, _ = generate_mask(gt, np.random.default_rng(seed), mode=2, budget=b2)
    if mode == 2:
        assert (~mask).sum() == b2


@given(n=st.integers(1, 30), seed=st.integers(0, 2**31), seen_mode=st.sampled_from([1, 2, 3]),
       seen_n=st.integers(1, 30))
@settings(max_examples=300, deadline=None)
def test_unseen_cases(n, seed, seen_mode, seen_n):
    gt = np.zeros(n, dtype=int)
    seen_budget = {1: seen_n, 2: max(1, int(0.3 * seen_n)), 3: seen_n}[seen_mode]
    mask, case = augment_unseen_mask(gt, seen_mode, seen_budget, seen_n, np.random.default_rng(seed))
    assert 1 <= case <= 5 and mask.shape == (n,)
    if case == 1:
        assert mask.all()
    elif case == 2:
        assert not mask.any()
    elif case == 3:
        assert 1 <= mask.sum() <= n
    elif case == 4:
        scaled = max(1, round(seen_budget / seen_n * n))
        if seen_mode == 1:
            assert mask.all()
        elif seen_mode == 3:
            assert mask.sum() == min(scaled, n)
        elif n > 1:
            assert (~mask).sum() == min(scaled, max(1, int(0.3 * n)))


def test_all_unseen_cases_occur():
    seen = {augment_unseen_mask(np.zeros(5, int), 3, 2, 10, np.random.default_rng(s))[1] for s in range(200)}
    assert seen == {1, 2, 3, 4, 5}


@given(seed=st.integers(0, 2**31), last=st.floats(0.5, 30), s=st.floats(0, 30), length=st.floats(0.1, 10),
       prefix=st.booleans(), modes=st.sampled_from([(1,), (2,), (3,), (1, 2, 3), (0, 1, 2, 3)]))
@settings(max_examples=300, deadline=None)
def test_window_invariants(seed, last, s, length, prefix, modes):
    cfg = StrideWindowConfig(window=16, mask_modes=modes)
    entries = [ActivationEntry(s, s + length, "<active>", True)]
    if prefix:
        entries.append(ActivationEntry(max(0.0, s - 8), max(0.0, s - 1), "<inactive>", False))
    try:
        w = build_window(entries, last, cfg, np.random.default_rng(seed))
    except AnnotationError as e:
        assert e.reason == "no_maskable_slots"
        return
    assert w.mode in modes or (w.mode == 0 and 2 in modes)
    assert not w.mask[w.fixed].any()
    assert (w.gt[w.unseen] == 0).all()
    assert (w.unseen == (w.ends < 0)).all()
    if w.mode == 2 and w.maskable.sum() == 1:
        # reference behaviour: budget max(1, int(0.3)) = 1 reveals the only (inactive) slot -> nothing to learn
        assert not w.mask[w.maskable].any()
    else:
        assert w.mask[w.maskable].any()
    toks = w.tokens()
    assert all(t == "<activation>" for t, m in zip(toks, w.mask) if m)
    assert all(t == ("<active>" if g else "<inactive>") for t, g, m in zip(toks, w.gt, w.mask) if not m)
    text = activation_text(w, cfg)
    assert text == "".join(toks) * 2


def test_masking_is_deterministic_in_the_rng():
    cfg = StrideWindowConfig(window=16)
    e = [ActivationEntry(3, 6, "<active>", True)]
    a = build_window(e, 12.0, cfg, np.random.default_rng(5))
    b = build_window(e, 12.0, cfg, np.random.default_rng(5))
    assert (a.mask == b.mask).all() and a.mode == b.mode
