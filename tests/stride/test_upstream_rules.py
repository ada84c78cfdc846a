"""The five decisions (and the edge cases) where the streaming loop must follow the released STRIDE code
(`STRIDEQwen3VL._diffuse_shifted`, `_unmask`, `_update_segments`, `detect`), each on a hand-made
case: stub p(active), fixed draws, expected outputs worked out by hand from the reference's rule (the comments
give the arithmetic). research/probes/stride_upstream_parity.py runs the reference's loop itself against ours."""

import numpy as np
import pytest

from stvl_jax.infer.stride_loop import run_stream
from stvl_jax.infer.stride_runtime import StreamConfig
from stvl_jax.models.stride.sampler import MASKED, NO_HISTORY, denoise
from stvl_jax.models.stride.triggers import Segment, TriggerTracker
from stride_stubs import Recorder


class FixedDraws:
    """rng stub: records each candidate set (positions among the masked slots, as the reference's `_unmask`
    indexes them) and picks its k smallest (independent of the candidates' order)."""

    def __init__(self):
        self.candidates = []

    def choice(self, a, k, replace=False):
        assert not replace
        self.candidates.append(sorted(np.asarray(a).tolist()))
        return np.sort(np.asarray(a))[:k]


def stub_stream(times, p_at, *, window, future=0, chunk, max_window, stride, multi=False, steps=8,
                confidence=0.75, margin=1.0):
    """The loop over `times` with p(active) = p_at(slot starts) per chunk -> StreamResult."""
    cfg = StreamConfig(chunk_size=chunk, max_window=max_window, stride=stride, steps=steps, confidence=confidence,
                       multi_event=multi, margin=margin)

    def open_view(start, end, n):
        t_last = float(times[start + n - 1])
        # the reference's grid with whole-second times: slot i starts at t_last - window + i
        p = np.asarray(p_at(t_last - window + np.arange(window + future)), np.float32)
        return (lambda labels: p), False

    tracker = TriggerTracker(margin, multi, cfg.max_triggers)
    return run_stream(np.asarray(times, np.float64), open_view, cfg, tracker, window=window, future=future)


def active_on(*ranges, on=0.9, off=0.1):
    """p_at: `on` for slots starting inside any [a, b) of `ranges`, else `off` (both 0.9-confident)."""
    def p_at(starts):
        inside = np.zeros(len(starts), bool)
        for a, b in ranges:
            inside |= (starts >= a) & (starts < b)
        return np.where(inside, on, off)
    return p_at


# ------------------------------------------------------------------- 1. the schedule spreads the SEEN slots
def test_schedule_spreads_seen_slots_capped_at_what_is_masked():
    # 16 seen slots, 5 retained from the history -> 11 masked. Reference: divmod(16, 8) -> [2]*8, each capped
    # at the masked count: 2, 2, 2, 2, 2, 1 (then 0, 0: skipped, no forward) -> masked at each forward
    # 11, 9, 7, 5, 3, 1 after the baseline forward (16 masked).
    p = np.full(16, 0.9)
    hist = np.full(16, NO_HISTORY, np.int8)
    hist[:5] = 1  # |0.9 - 1| < 0.25: kept
    stub = Recorder(p)
    out = denoise(stub, np.zeros(16, bool), np.random.RandomState(0), steps=8, confidence=0.75, history=hist)
    assert out.retained == 5
    assert [int((c == MASKED).sum()) for c in stub.calls] == [16, 11, 9, 7, 5, 3, 1]
    assert out.forwards == 7


def test_retained_history_leaves_two_forwards_of_129_seen_slots():
    # 129 seen, 97 retained, 32 masked: divmod(129, 8) = (16, 1) -> [17, 16, ...]; 17, then min(16, 15) = 15,
    # then nothing is masked: baseline + 2 forwards
    hist = np.full(129, NO_HISTORY, np.int8)
    hist[:97] = 0
    stub = Recorder(np.full(129, 0.1))
    out = denoise(stub, np.zeros(129, bool), np.random.RandomState(0), steps=8, confidence=0.75, history=hist)
    assert [int((c == MASKED).sum()) for c in stub.calls] == [129, 32, 15]
    assert out.forwards == 3 and not out.labels.any()


def test_forwards_per_chunk_on_a_stream():
    # window 16, chunks of 8 frames (times 0..31), one mega-window; p = 0.9 everywhere.
    # chunk 1: t_last 7, slots start -9..6; unseen: end + 0.1 < 0 -> ends -8..-1 (8 slots); 8 seen, no history:
    #   [1]*8 -> 8 forwards.
    # chunks 2-4: t_last 15/23/31, 16 seen; the previous chunk's 8 overlapping slots (label 1, |0.9 - 1| < 0.25)
    #   are retained, 8 masked: baseline + [2, 2, 2, 2] = 5 forwards.
    r = stub_stream(np.arange(32.0), lambda s: np.full(len(s), 0.9), window=16, chunk=8, max_window=32,
                       stride=8)
    assert [c.forwards for c in r.chunks] == [8, 5, 5, 5]
    assert [c.retained for c in r.chunks] == [0, 8, 8, 8]


# ------------------------------------------------------------------- 2. ties at the top-2k boundary
def test_equal_confidences_take_the_newest_slots_as_candidates():
    # 6 seen slots, all p = 0.9 (equal confidence), steps 3: k = 2 per step, c = 2k = 4 candidates.
    # Reference: np.argpartition(conf, -4)[-4:] over equal values -> the newest 4 (positions 2..5); our draw
    # stub takes the 2 lowest of each set: slots 2, 3; step 2: 4 masked (slots 0, 1, 4, 5), c = 4: all of
    # them (positions 0..3), picks slots 0, 1; step 3: slots 4, 5 (positions 0, 1).
    draws = FixedDraws()
    out = denoise(Recorder(np.full(6, 0.9)), np.zeros(6, bool), draws, steps=3, confidence=None)
    assert draws.candidates == [[2, 3, 4, 5], [0, 1, 2, 3], [0, 1]]
    assert out.step_of.tolist() == [2, 2, 1, 1, 3, 3]


def test_ties_below_the_most_confident_take_the_newest():
    # conf [0.9, 0.9, 0.7, 0.9, 0.9, 0.6], k = 1 -> c = 2: four slots tie at 0.9; the newest two (3, 4)
    p = np.array([0.9, 0.1, 0.7, 0.1, 0.9, 0.4])
    draws = FixedDraws()
    denoise(Recorder(p), np.zeros(6, bool), draws, steps=6, confidence=None)
    assert draws.candidates[0] == [3, 4]


def test_draws_are_numpy_legacy_choice_among_the_candidates():
    # strictly increasing confidences (conf = p for p > 0.5), steps 4: k = 2, the top 2k = 4 are slots 4..7
    p = np.array([0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    draws = FixedDraws()
    denoise(Recorder(p), np.zeros(8, bool), draws, steps=4, confidence=None)
    assert draws.candidates[0] == [4, 5, 6, 7]  # the 4 most confident
    # the legacy generator (the reference's np.random after np.random.seed) draws k of those candidates
    out = denoise(Recorder(p), np.zeros(8, bool), np.random.RandomState(3), steps=4, confidence=None)
    first = set(np.flatnonzero(out.step_of == 1).tolist())
    assert first <= {4, 5, 6, 7} and len(first) == 2


# ------------------------------------------------------------------- 3. merge keeps the new span's end
def test_merge_keeps_the_new_end():
    t = TriggerTracker(margin=1.0)
    assert t.update((8.0, 15.0), 0.0, 15.0) == []  # pending: 15 < 15 - 1 is false
    # (8, 13) starts at or before 15: merge -> start min(8, 8) = 8, end the NEW 13; 13 < 16 - 1: trigger
    assert t.update((8.0, 13.0), 0.0, 16.0) == [Segment(8.0, 13.0, 16.0, "trigger")]


def test_merge_needs_only_the_new_start_before_the_pending_end():
    # pending (10, 12); new span (2, 4): 2 <= 12 -> merged into (min(2, 10), 4) = (2, 4), not discarded;
    # 4 < 12.5 - 1: a trigger
    t = TriggerTracker(margin=1.0)
    t.update((10.0, 12.0), 0.0, 12.0)
    assert t.update((2.0, 4.0), 0.0, 12.5) == [Segment(2.0, 4.0, 12.5, "trigger")]
    assert t.discarded == []


# ------------------------------------------------------------------- 4. discard: pending end >= first seen start
def test_discard_compares_the_pending_end_with_the_first_seen_slot():
    t = TriggerTracker()
    t.update((3.0, 6.0), 0.0, 6.0)
    assert t.update(None, 5.0, 9.0) == [] and t.discarded == [Segment(3.0, 6.0)]  # 6 >= 5: discard
    t = TriggerTracker()
    t.update((3.0, 6.0), 0.0, 6.0)
    assert t.update(None, 7.0, 9.0) == [Segment(3.0, 6.0, 9.0, "accepted")]  # 6 < 7: it left the window


def test_pending_span_reaching_into_the_new_mega_window_is_discarded():
    # window 8, chunks of 4, mega-window 8 advancing by 4 (times 0..15). Active slots start in [2, 7).
    # p is active on slots starting in [2, 7) while t_last <= 7 (last slot start <= 6), inactive afterwards.
    # cursor 4: t_last 3, slots -5..2; seen (end + 0.1 >= 0): -1..2; active [2, 3) -> span (2, 3);
    #   3 < 3 - 1? no: pending.
    # cursor 8: t_last 7, slots -1..6 all seen; active 2..6 -> (2, 7); 2 <= 3: merged (2, 7); 7 < 6? no: pending.
    # cursor 12: 12 - 0 > 8 -> stack_start 4, t_last 11; slots 3..10, all seen, first seen start 3; nothing
    #   active; pending (2, 7): 7 >= 3 -> discarded (the old rule, start 2 >= stack start 4 false, accepted it).
    def p_at(starts):
        return np.where((starts >= 2) & (starts < 7) & (starts[-1] <= 6), 0.9, 0.1)

    r = stub_stream(np.arange(16.0), p_at, window=8, chunk=4, max_window=8, stride=4)
    assert [c.span for c in r.chunks] == [(2.0, 3.0), (2.0, 7.0), None, None]
    assert r.discarded == [Segment(2.0, 7.0)]
    assert r.segments == [Segment(0.0, 15.0, None, "fallback")]


def test_slot_window_shorter_than_a_chunk_accepts_what_left_it():
    # window 4, chunks of 8 (times 0..15), one mega-window of 16. cursor 8: t_last 7, slots 3..6, span on [5, 7)
    # -> (5, 7), pending. cursor 16: t_last 15, slots 11..14, first seen start 11, nothing active:
    # 7 < 11 -> accepted (the old rule discarded it: start 5 >= mega-window start 0).
    def p_at(starts):
        return np.where((starts >= 5) & (starts < 7), 0.9, 0.1)

    r = stub_stream(np.arange(16.0), p_at, window=4, chunk=8, max_window=16, stride=8)
    assert r.segments == [Segment(5.0, 7.0, 15.0, "accepted")]


# ------------------------------------------------------------------- 5. span start at the mega-window edge
def test_span_keeps_the_slot_before_the_new_base():
    # window 8, chunks 4, mega 8 / stride 4 (times 0..15); p: only slot [3, 4) active, and only from t_last 11
    # (last slot start >= 10). At cursor 12 the view starts at frame 4 (stack_start 4) and [3, 4) ends at it
    # (end + 0.1 >= 0: seen): span (3, 4); 4 < 11 - 1: trigger (3, 4).
    def p_at(starts):
        return np.where((starts == 3) & (starts[-1] >= 10), 0.9, 0.1)

    r = stub_stream(np.arange(16.0), p_at, window=8, chunk=4, max_window=8, stride=4)
    assert r.chunks[2].seen_start == 4.0 and r.chunks[2].span == (3.0, 4.0)
    assert r.segments == [Segment(3.0, 4.0, 11.0, "trigger")]  # the old clip made (4, 4)


def test_reported_segments_are_clipped_at_zero():
    # slot [-1, 0) is seen at the stream start (end 0 + 0.1 >= 0); active alone: span (-1, 0); at t_last 3,
    # 0 < 2: trigger; reported as (max(0, -1), max(0, 0)) = (0, 0), as the reference writes its segments
    r = stub_stream(np.arange(8.0), active_on((-1, 0)), window=4, chunk=4, max_window=8, stride=4)
    assert r.chunks[0].span == (-1.0, 0.0)
    assert r.segments == [Segment(0.0, 0.0, 3.0, "trigger")]


# ------------------------------------------------------------------- odd frame counts, end of stream
def test_odd_frame_count_fallback_ends_at_the_last_decoded_frame():
    # 13 frames (times 0..12), nothing active: the answer is [0, 12] (the old loop dropped frame 12: [0, 11])
    r = stub_stream(np.arange(13.0), active_on(), window=8, chunk=4, max_window=8, stride=4)
    assert r.segments == [Segment(0.0, 12.0, None, "fallback")]
    # cursors 4, 8, 12, 13: the last view (13 - 8 = 5 frames -> 4) is frames 8..11 again, re-diffused
    assert [c.t_last for c in r.chunks] == [3.0, 7.0, 11.0, 11.0]


def test_skipped_last_view_leaves_the_pending_span_open():
    # 5 frames, chunk 2, mega 4 advancing by 4: cursor 5 moves stack_start to 4 and sees 1 frame: skipped,
    # so the end-of-stream finalization never runs; the open span (always active, never 1 s old) is dropped
    # and the answer falls back to [0, 4]
    r = stub_stream(np.arange(5.0), active_on((-10, 10)), window=4, chunk=2, max_window=4, stride=4)
    assert len(r.chunks) == 2
    assert r.segments == [Segment(0.0, 4.0, None, "fallback")]


def test_open_span_is_finalized_after_the_last_chunk():
    r = stub_stream(np.arange(8.0), active_on((5, 10)), window=4, chunk=4, max_window=8, stride=4)
    assert r.segments == [Segment(5.0, 7.0, None, "final")]


# ------------------------------------------------------------------- single-event: both completions reported
def test_single_event_keeps_an_accepted_segment_and_a_trigger_of_the_same_chunk():
    t = TriggerTracker(margin=1.0)
    t.update((2.0, 3.0), 0.0, 3.0)
    # (8, 9) does not reach back to 3; 3 < first seen 5: (2, 3) accepted; 9 < 10: (8, 9) a trigger too
    assert t.update((8.0, 9.0), 5.0, 11.0) == [Segment(2.0, 3.0, 11.0, "accepted"), Segment(8.0, 9.0, 11.0)]
    assert t.done and len(t.segments) == 2


# ------------------------------------------------------------------- history by time overlap
def test_history_matches_by_time_overlap_for_fractional_shifts():
    # times 1.25 s apart, window 4, chunks of 2 frames, one mega-window.
    # chunk 1: view times 0, 1.25: slots start -2.75, -1.75, -0.75, 0.25 (ends -1.75, -0.75, 0.25, 1.25);
    #   seen: [-0.75, 0.25) and [0.25, 1.25); p: 0.9 and 0.1 -> labels 1, 0.
    # chunk 2: t_last 3.75: slots start -0.25, 0.75, 1.75, 2.75; p = 0.9, 0.1, 0.9, 0.9.
    #   [-0.25, 0.75) overlaps both previous slots (1 and 0): no consensus, not retained;
    #   [0.75, 1.75) overlaps only [0.25, 1.25) (0) and |0.1 - 0| < 0.25: retained. -> 1 retained.
    # (rounding the 2.5-slot shift to 2, the old loop matched slot 0 with label 1 and retained 2.)
    times = np.arange(4) * 1.25
    cfg = StreamConfig(chunk_size=2, max_window=4, stride=2, steps=8, confidence=0.75)
    ps = {1.25: np.array([0.1, 0.1, 0.9, 0.1]), 3.75: np.array([0.9, 0.1, 0.9, 0.9])}

    def open_view(start, end, n):
        p = ps[float(times[start + n - 1])].astype(np.float32)
        return (lambda labels: p), False

    r = run_stream(times, open_view, cfg, TriggerTracker(), window=4)
    np.testing.assert_allclose(r.chunks[1].slot_starts, [-0.25, 0.75, 1.75, 2.75])
    assert r.chunks[0].labels.tolist()[2:] == [1, 0]
    assert [c.retained for c in r.chunks] == [0, 1]


# ------------------------------------------------------------------- trigger_window_future > 0
def test_future_slots_are_seen_and_decided():
    # window 4 + future 2, 4 frames in one chunk: t_last 3, slots start -1..4; all seen (the first ends at 0);
    # 6 seen -> [1]*6: 6 forwards; future slots [3, 4), [4, 5) active -> span (3, 5), open -> final
    r = stub_stream(np.arange(4.0), active_on((3, 5)), window=4, future=2, chunk=4, max_window=4, stride=4)
    c = r.chunks[0]
    np.testing.assert_allclose(c.slot_starts, [-1, 0, 1, 2, 3, 4])
    assert c.forwards == 6 and c.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert r.segments == [Segment(3.0, 5.0, None, "final")]


def test_denoise_refuses_unseen_slots_after_seen_ones():
    with pytest.raises(ValueError, match="unseen slots must come before"):
        denoise(Recorder(np.full(3, 0.9)), np.array([False, True, False]), np.random.RandomState(0))
