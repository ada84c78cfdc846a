"""Metrics against hand-computed values."""

import pytest

from stvl_jax.eval.metrics import classification_report, span_f1, temporal_iou


def test_classification_report_by_hand():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", None, "a"]
    r = classification_report(gold, pred, ["a", "b", "c"])
    # a: tp 2, fp 1 (the c->a), fn 1 -> P 2/3, R 2/3; b: tp 1, fp 1, fn 1 -> 1/2, 1/2; c: 0
    assert r["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["f1"] == 0.0
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 3)
    assert r["accuracy"] == pytest.approx(3 / 6)
    assert r["confusion"][1] == [0, 1, 0, 1]  # gold b: one b, one unparseable


def test_majority_baseline_is_about_a_third_on_skewed_data():
    gold = ["s"] * 90 + ["w"] * 5 + ["r"] * 5
    r = classification_report(gold, ["s"] * 100, ["s", "w", "r"])
    assert r["macro_f1"] == pytest.approx((2 * 0.9 / 1.9) / 3)


def test_span_f1_and_tiou():
    assert temporal_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    r = span_f1(gold=[(0, 2), (5, 7)], pred=[(0.2, 2), (5, 6), (10, 11)], threshold=0.5)
    assert (r["tp"], r["precision"], r["recall"]) == (2, pytest.approx(2 / 3), 1.0)
    assert span_f1([(0, 2)], [(1.5, 3)], 0.5)["f1"] == 0.0
