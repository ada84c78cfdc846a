"""E.T. Bench rows and tables, hand-computed: the official tie arithmetic (float32 IoU vs double / float32
thresholds, dvc's union + 1e-8 with '>'), evs / vhd / tem / choice / gvq rows, rounding and the summary tables."""

import numpy as np
import pytest

from stvl_jax.eval import etbench
from stvl_jax.eval import etbench_metrics as em


def _row(task, answers_tgts, **kw):
    samples = [{"task": task, "source": "s", "video": f"v{i}", "a": a, "tgt": t, **kw}
               for i, (a, t) in enumerate(answers_tgts)]
    return etbench.score(samples)[task]["s"]


def test_float32_iou_ties_decide_hits_as_officially():
    # IoU 7/10 in float32 is 0.69999999: tvg compares it as a double with 0.7 (miss), tal with float32(0.7) (hit)
    assert float(em.iou_f32([[0, 10]], [[0, 7]])[0, 0]) == float(np.float32(0.7)) < 0.7
    tvg = _row("tvg", [("0 - 7", [0, 10])])
    assert [tvg[f"F1@{t}"] for t in em.THRESHOLDS] == [1.0, 1.0, 1.0, 0.0] and tvg["F1"] == 0.75
    assert tvg["mIoU"] == 0.7  # 0.69999999 rounded to 5 decimals
    tal = _row("tal", [("0 - 7", [[0, 10]])])
    assert [tal[f"F1@{t}"] for t in em.THRESHOLDS] == [1.0, 1.0, 1.0, 1.0]
    # IoU 0.5 exactly (5/10) is a hit at 0.5 for tvg (>=)
    assert _row("tvg", [("0 - 5", [0, 10])])["F1@0.5"] == 1.0


def test_tal_recall_and_precision_are_float32_means():
    # targets [0,3],[5,6],[7,9]; answers [0,3],[1,2],[2,3]: IoUs with [0,3] are 1, 1/3, 1/3
    row = _row("tal", [("0 - 3, 1 - 2, 2 - 3", [[0, 3], [5, 6], [7, 9]])])
    # at 0.1 and 0.3: recall 1/3, precision 3/3 (1/3 >= 0.3); at 0.5, 0.7: recall 1/3, precision 1/3
    rec, prc = float(np.float32(1 / 3)), 1.0
    f1_low, f1_high = 2 * prc * rec / (prc + rec), float(np.float32(1 / 3))
    assert [row[f"F1@{t}"] for t in em.THRESHOLDS] == [round(f1_low, 5)] * 2 + [round(f1_high, 5)] * 2
    assert row["F1"] == round((2 * f1_low + 2 * f1_high) / 4, 5) == 0.41667


def test_dense_detection_uses_union_plus_epsilon_and_strict_comparison():
    # answer [0, 5] vs target [0, 10]: IoU 5 / (10 + 1e-8) < 0.5 -> covered at 0.1 and 0.3 only
    row = _row("dvc", [("0 - 5 seconds, a man cuts the onion.", [[0, 10]])], g=["a man cuts the onion"])
    assert [row[f"F1@{t}"] for t in em.THRESHOLDS] == [1.0, 1.0, 0.0, 0.0] and row["F1"] == 0.5
    assert em.dvc_iou([0, 10], [0, 10]) < 1.0 and em.dvc_iou([0, 10], [0, 10]) > 0.7  # '>' t still hits


def test_dense_rows_take_the_last_sample_of_a_video_and_scale_by_parsed_videos():
    # two samples of one video: the official dicts keep the second; one unparsed sample of another video
    base = {"task": "slc", "source": "s", "video": "v"}
    samples = [{**base, "tgt": [[0, 10]], "g": ["x"], "a": "0 - 10 seconds, xxxxxx"},
               {**base, "tgt": [[50, 60]], "g": ["y"], "a": "0 - 10 seconds, yyyyyy"},
               {**base, "video": "w", "tgt": [[0, 1]], "g": ["z"], "a": "no"}]
    row = etbench.score(samples)["slc"]["s"]
    # one parsed video of 3 samples (scale 1/3), and it misses its (second) target: F1 0
    assert row["F1"] == 0 and row["Failed"] == 1 and row["Total"] == 3


def test_event_summarization_bins_seconds_with_half_even_rounding():
    # 2.5 - 6.5 -> round() 2, 6 -> seconds 2..5 = the target: F1 1; "none" is failed and not averaged
    assert _row("evs", [("2.5 - 6.5", [[2, 6]]), ("none", [[0, 1]])]) == {"Total": 2, "Failed": 1, "F1": 1.0}
    # answer 0-10 and 20-30 vs target 5-25: tp 10 (5..9, 20..24), fp 10, fn 10 -> F1 0.5
    assert _row("evs", [("0 - 10, 20 - 30", [[5, 25]])])["F1"] == 0.5


def test_highlight_hits_any_annotator_segment():
    row = _row("vhd", [("at 12.5 s", [[10, 15], [20, 25]]), ("3", [[[0, 2]], [[2.5, 4]]]), ("none", [[0, 1]]),
                       ("-1", [[0, 5]])])
    assert row == {"Total": 4, "Failed": 1, "F1": 0.5}


def test_moment_recall_takes_the_best_target():
    row = _row("tem", [("4 - 9", [[0, 5], [5, 10]]), ("none", [[0, 1]])])
    # [4, 9] vs [5, 10]: IoU 4/6 (hit up to 0.5); the failed sample counts as a miss
    assert [row[f"R@{t}"] for t in em.THRESHOLDS] == [0.5, 0.5, 0.5, 0.0] and row["mRec"] == 0.375
    assert row["mIoU"] == round(float(np.float32(4) / np.float32(6)) / 2, 5)


OPTIONS = ["a man cuts the onion", "a woman opens the door", "a dog runs in the park", "a car drives down"]


def _overlap(text, option):
    """A stand-in similarity: words shared with '(X) option'."""
    return len(set(text.lower().split()) & set(option.lower().split()))


def test_choice_accuracy_reads_letters_then_similarity():
    answers = [("(B)", 1), ("Best option: (C) a dog", 2), ("a", 1), ("b. the woman", 1),
               ("the woman opens the door", 1), ("", 3), ("(x) c", 2)]
    samples = [{"a": a, "p": p, "o": OPTIONS} for a, p in answers]
    # hits: (B); (C); b.; similarity picks B; "(x) c" -> lstrip "(" -> "x) c": letter form, x not an option ->
    # similarity, no word shared ("x)", "c") -> the first option A (p 2: miss). Misses: "a" (p 1), "" (failed).
    # Failed: "" and "the woman opens the door" (matched only by similarity)
    assert em.choice_accuracy(samples, _overlap) == {"Total": 7, "Failed": 2, "Acc": round(4 / 7, 5)}
    # without a SentSim model the similarity answers stay unresolved: Acc not computed
    assert em.choice_accuracy(samples, None) == {"Total": 7, "Failed": 2, "Acc": None, "Unresolved": 2}


def test_grounded_qa_grounds_only_the_correct_choices():
    samples = [{"a": a, "p": p, "o": OPTIONS, "tgt": [0, 10]} for a, p in
               (("(A) 0 - 7 seconds", 0), ("B, from 3 to 9", 1), ("C", 1), ("", 0))]
    row = em.grounded_qa(samples, _overlap)
    # correct: samples 0 and 1 (Acc 2/4); IoUs 0.7 (float32: misses 0.7) and 0.6; "" is failed
    assert row["Acc"] == 0.5 and row["Failed"] == 1
    assert [row[f"R@{t}"] for t in em.THRESHOLDS] == [0.5, 0.5, 0.5, 0.0] and row["mRec"] == 0.375
    assert row["mIoU"] == round((float(np.float32(0.7)) + float(np.float32(0.6))) / 4, 5)


def test_summary_means_rounded_rows_and_builds_the_official_tables():
    rows = {"tvg": {"a": {"F1": 0.1}, "b": {"F1": 0.2}, "c": {"F1": 0.25}}, "epm": {"a": {"F1": 0.5}},
            "tal": {"a": {"F1": 0.33333}}, "evs": {"a": {"F1": 0.0}}, "vhd": {"a": {"F1": 1.0}}}
    summary = etbench._summary(rows, None)
    assert summary["tasks"]["TVG (F1)"] == 0.18333  # (0.1 + 0.2 + 0.25) / 3 rounded
    assert summary["overall"]["TVG (F1)"] == 18.3 and summary["overall"]["RAR (Acc)"] is None
    # F1 (gnd): the mean of the 5 task means in percent, 1 decimal: (0.18333 + 0.5 + 0.33333 + 0 + 1) / 5
    assert summary["merged"]["F1 (gnd)"] == 40.3 and summary["merged"]["Acc (ref)"] is None
    assert summary["means"]["Grounding F1"] == 0.34048  # all 7 sources: 2.38333 / 7


@pytest.mark.parametrize("bad", [{"o": OPTIONS[:3], "p": 0}, {"o": OPTIONS, "p": "B"}])
def test_choice_samples_are_checked(bad):
    from stvl_jax.errors import InputError

    with pytest.raises(InputError, match=r"sample 0 \(rar/s\)"):
        etbench.score([{"task": "rar", "source": "s", "a": "A", **bad}])
