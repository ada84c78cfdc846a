"""QVHighlights -> timestamp Yes/No questions and the accuracy metric."""

import numpy as np
import pytest

from data_pipelines.errors import AnnotationError
from data_pipelines.formats.qvhighlights import (
    normalize_yesno, parse_yesno_prediction, to_yesno, validate_yesno_sample, yesno_accuracy,
)

REC = {"qid": 7, "query": "the red circle is moving", "duration": 20.0, "vid": "v1",
       "relevant_windows": [[2.0, 6.0], [12.0, 14.0]]}


def test_balanced_pair_inside_and_outside_with_margin():
    for seed in range(50):
        yes, no = to_yesno(REC, np.random.default_rng(seed), margin=0.5)
        assert yes["answer"] == "Yes" and no["answer"] == "No"
        t = yes["timestamp"]
        assert 2.5 <= t <= 5.5 or 12.5 <= t <= 13.5
        t = no["timestamp"]
        assert t < 1.5 or 6.5 < t < 11.5 or t > 14.5
        assert f"At {t:.1f} seconds" in no["question"] and "the red circle is moving" in no["question"]
        assert t <= 20.0


@pytest.mark.parametrize("bad,reason", [
    ({"relevant_windows": [[5, 3]]}, "bad_span"), ({"relevant_windows": [[-1, 3]]}, "negative_time"),
    ({"relevant_windows": [[1, 25]]}, "time_out_of_range"), ({"duration": float("nan")}, "nan_time"),
    ({"relevant_windows": []}, "missing_field"), ({"query": ""}, "bad_field"),
])
def test_invalid_records(bad, reason):
    with pytest.raises(AnnotationError) as e:
        to_yesno({**REC, **bad}, np.random.default_rng(0))
    assert e.value.reason == reason


def test_window_covering_everything_has_no_no_question():
    with pytest.raises(AnnotationError) as e:
        to_yesno({**REC, "relevant_windows": [[0, 20]]}, np.random.default_rng(0))
    assert e.value.reason == "no_no_time"


def test_accuracy_metric():
    samples = [{"id": "a", "answer": "Yes"}, {"id": "b", "answer": "No"}, {"id": "c", "answer": "No"},
               {"id": "d", "answer": "Yes"}]
    preds = {"a": "Yes.", "b": " no, it is not", "c": "Yes", "d": "maybe"}
    r = yesno_accuracy(samples, preds)
    assert r["accuracy"] == 0.5 and r["correct"] == 2 and r["yes_accuracy"] == 0.5 and r["no_accuracy"] == 0.5
    assert normalize_yesno("YES!") == "yes" and normalize_yesno("perhaps") is None


def test_missing_predictions_are_wrong_and_counted():
    samples = [{"id": "a", "answer": "Yes"}, {"id": "b", "answer": "no"}]
    r = yesno_accuracy(samples, {"a": "yes"})
    assert r["accuracy"] == 0.5 and r["missing_predictions"] == 1 and r["no_accuracy"] == 0.0


@pytest.mark.parametrize("rec,reason", [
    ([{"id": "a", "answer": "Yes"}], "bad_record"), ({"answer": "Yes"}, "missing_field"),
    ({"id": None, "answer": "Yes"}, "missing_field"), ({"id": "", "answer": "Yes"}, "bad_field"),
    ({"id": ["a"], "answer": "Yes"}, "bad_field"), ({"id": True, "answer": "Yes"}, "bad_field"),
    ({"id": "a"}, "missing_field"), ({"id": "a", "answer": "maybe"}, "bad_field"),
    ({"id": "a", "answer": 1}, "bad_field"),
])
def test_invalid_yesno_samples(rec, reason):
    with pytest.raises(AnnotationError) as e:
        validate_yesno_sample(rec, "s.jsonl:3")
    assert e.value.reason == reason and str(e.value).startswith("s.jsonl:3: ")


@pytest.mark.parametrize("rec,reason", [
    ("Yes", "bad_record"), ({"prediction": "Yes"}, "missing_field"), ({"id": "a"}, "missing_field"),
    ({"id": "a", "prediction": None}, "missing_field"), ({"id": "a", "prediction": ["Yes"]}, "bad_field"),
    ({"id": "a", "prediction": 1}, "bad_field"),
])
def test_invalid_predictions_are_errors_not_empty_answers(rec, reason):
    with pytest.raises(AnnotationError) as e:
        parse_yesno_prediction(rec, "p.jsonl:1")
    assert e.value.reason == reason


def test_prediction_text_is_prediction_else_answer():
    assert parse_yesno_prediction({"id": 3, "prediction": "No", "answer": "Yes"}) == (3, "No")
    assert parse_yesno_prediction({"id": "a", "answer": "Yes"}) == ("a", "Yes")


@pytest.mark.parametrize("bad,reason", [
    ({"qid": [7]}, "bad_field"), ({"vid": None}, "missing_field"), ({"vid": {"a": 1}}, "bad_field"),
    ({"video": 3}, "bad_field"), ({"duration": True}, "bad_time"), ({"relevant_windows": [[True, 3]]}, "bad_time"),
])
def test_invalid_identifiers_and_bool_times(bad, reason):
    with pytest.raises(AnnotationError) as e:
        to_yesno({**REC, **bad}, np.random.default_rng(0))
    assert e.value.reason == reason
