"""Span -> segment -> trigger rules (merge, false-positive discard, accept after leaving, margin, modes)."""

from stvl_jax.models.stride.triggers import Segment, TriggerTracker


def test_span_triggers_once_it_ends_a_margin_before_now():
    t = TriggerTracker(margin=1.0)
    assert t.update((3.0, 5.0), first_seen_start=0.0, t_last=5.0) == []  # still open
    assert t.update((3.0, 5.0), first_seen_start=0.0, t_last=6.0) == []  # ends exactly 1 s before: not yet
    new = t.update((3.0, 5.0), first_seen_start=0.0, t_last=7.0)
    assert new == [Segment(3.0, 5.0, 7.0, "trigger")] and t.done and t.pending is None


def test_overlapping_spans_merge():
    t = TriggerTracker()
    t.update((3.0, 5.0), 0.0, 5.0)
    t.update((4.0, 6.0), 0.0, 6.0)
    assert t.pending == Segment(3.0, 6.0)
    assert t.update((5.0, 6.0), 0.0, 8.0) == [Segment(3.0, 6.0, 8.0, "trigger")]


def test_unconfirmed_span_inside_the_window_is_a_false_positive():
    t = TriggerTracker()
    t.update((2.0, 3.0), 0.0, 3.0)
    assert t.update((7.0, 8.0), 0.0, 8.0) == []  # (2, 3) was still in view and not re-predicted
    assert t.discarded == [Segment(2.0, 3.0)] and t.pending == Segment(7.0, 8.0)
    assert t.update(None, 0.0, 9.0) == [] and t.discarded[-1] == Segment(7.0, 8.0)


def test_span_that_left_the_window_is_accepted():
    t = TriggerTracker(margin=5.0)
    t.update((2.0, 3.0), first_seen_start=0.0, t_last=3.0)
    new = t.update(None, first_seen_start=4.0, t_last=10.0)  # the window moved past it
    assert new == [Segment(2.0, 3.0, 10.0, "accepted")]


def test_single_event_stops_multi_event_caps_at_max_triggers():
    single = TriggerTracker()
    single.update((1.0, 2.0), 0.0, 4.0)
    assert single.done
    multi = TriggerTracker(multi_event=True, max_triggers=2)
    multi.update((1.0, 2.0), 0.0, 4.0)
    assert not multi.done
    multi.update((5.0, 6.0), 3.0, 8.0)
    assert multi.done and len(multi.segments) == 2
    assert multi.update((9.0, 10.0), 8.0, 12.0) == []  # no room


def test_finalize_completes_the_open_segment_finish_falls_back():
    t = TriggerTracker()
    t.update((4.0, 6.0), 0.0, 6.0)
    assert t.finalize() == [Segment(4.0, 6.0, None, "final")]
    assert t.finish(6.0) == []  # a segment completed: no fallback
    empty = TriggerTracker()
    assert empty.finish(11.0) == [Segment(0.0, 11.0, None, "fallback")]
    assert TriggerTracker(fallback=False).finish(11.0) == []
