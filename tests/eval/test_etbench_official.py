"""`etbench.score` reproduces the official E.T. Bench `compute_metrics.py` number for number on
`etbench_helpers.parity_samples()` (all 12 tasks; answers from the official readers' own branches).

OFFICIAL holds the official script's output, obtained once by running it (a local copy of the HF repository's
`evaluation/compute_metrics.py`, pycocoevalcap 1.2 with Java 17, sentence-transformers with the tiny model of
`etbench_helpers.tiny_sentence_model`, its unmatched-caption random string fixed to REFERENCE) through
`research/probes/etbench_official_parity.py`, which also compares every number with this code (0 mismatches).
"""

import shutil

import pytest

from etbench_helpers import parity_samples, tiny_sentence_model
from stvl_jax.eval import etbench
from stvl_jax.eval.etbench_captions import CaptionScorer

REFERENCE = "qzqzqzqzqzqz"
CAPTION_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SentSim")

OFFICIAL = {
    "tvg": {"qvhighlights": {"Total": 8, "Failed": 3, "mIoU": 0.33125, "F1@0.1": 0.5, "F1@0.3": 0.5, "F1@0.5": 0.375,
                             "F1@0.7": 0.125, "F1": 0.375}},
    "epm": {"ego4d_nlq": {"Total": 5, "Failed": 1, "mIoU": 0.35175, "F1@0.1": 0.8, "F1@0.3": 0.6, "F1@0.5": 0.4,
                          "F1@0.7": 0.2, "F1": 0.5}},
    "tal": {"activitynet": {"Total": 5, "Failed": 1, "F1@0.1": 0.6, "F1@0.3": 0.6, "F1@0.5": 0.46667,
                            "F1@0.7": 0.46667, "F1": 0.53333}},
    "evs": {"summe": {"Total": 4, "Failed": 1, "F1": 0.5}},
    "vhd": {"youtube_highlights": {"Total": 4, "Failed": 1, "F1": 0.5}},
    "tem": {"perception_test": {"Total": 3, "Failed": 1, "mIoU": 0.47863, "R@0.1": 0.66667, "R@0.3": 0.66667,
                                "R@0.5": 0.66667, "R@0.7": 0.33333, "mRec": 0.58333}},
    "dvc": {"youcook2": {"Total": 4, "Failed": 0, "F1@0.1": 0.68182, "F1@0.3": 0.68182, "F1@0.5": 0.55556,
                         "F1@0.7": 0.55556, "F1": 0.61869, "Bleu_1": 0.66887, "Bleu_2": 0.66806, "Bleu_3": 0.66676,
                         "Bleu_4": 0.66392, "METEOR": 0.6563, "ROUGE_L": 0.66585, "CIDEr": 1.52769,
                         "SentSim": 0.97559}},
    "slc": {"cross_task": {"Total": 2, "Failed": 1, "F1@0.1": 0.33333, "F1@0.3": 0.33333, "F1@0.5": 0.33333,
                           "F1@0.7": 0.33333, "F1": 0.33333, "Bleu_1": 1.0, "Bleu_2": 1.0, "Bleu_3": 1.0,
                           "Bleu_4": 1.0, "METEOR": 1.0, "ROUGE_L": 1.0, "CIDEr": 0.0, "SentSim": 1.0}},
    "rar": {"blink": {"Total": 8, "Failed": 3, "Acc": 0.375}},
    "eca": {"charades_sta": {"Total": 8, "Failed": 3, "Acc": 0.375}},
    "rvq": {"star": {"Total": 8, "Failed": 3, "Acc": 0.375}},
    "gvq": {"qa_ego4d": {"Total": 5, "Failed": 1, "mIoU": 0.38, "R@0.1": 0.6, "R@0.3": 0.6, "R@0.5": 0.6,
                         "R@0.7": 0.0, "mRec": 0.45, "Acc": 0.6}},
}
OVERALL = ("37.5", "37.5", "37.5", "37.5", "50.0", "53.3", "50.0", "50.0", "61.9", "97.6", "33.3", "100.0", "58.3",
           "45.0")
MERGED = ("37.5", "48.2", "47.6", "98.8", "51.7")


@pytest.fixture(scope="module")
def sentsim_model(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    return tiny_sentence_model(str(tmp_path_factory.mktemp("minilm")))


def test_rows_without_captions_match_the_official_script(sentsim_model):
    """Every task's row (dvc/slc: the detection columns), the choice tasks using the SentSim fallback."""
    captions = CaptionScorer(sentsim_model)
    samples = parity_samples()
    rows = etbench.score([s for s in samples if s["task"] not in ("dvc", "slc")], captions)
    dense = etbench.score([s for s in samples if s["task"] in ("dvc", "slc")], None)
    for task, by_src in OFFICIAL.items():
        for src, row in by_src.items():
            ours = (dense if task in ("dvc", "slc") else rows)[task][src]
            assert {k: ours[k] for k in row if k not in CAPTION_KEYS} == {k: v for k, v in row.items()
                                                                          if k not in CAPTION_KEYS}, (task, src)


@pytest.mark.slow  # METEOR's Java start (10-30 s) and the PTB tokenizer
@pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need a Java runtime")
def test_caption_metrics_and_tables_match_the_official_script(sentsim_model):
    pytest.importorskip("pycocoevalcap")
    captions = CaptionScorer(sentsim_model)
    captions._random_reference = lambda: REFERENCE  # the official draw is unseeded: both sides use one string
    try:
        result = etbench.score(parity_samples(), captions)
    finally:
        captions.close()
    assert {t: result[t] for t in OFFICIAL} == OFFICIAL
    assert tuple(str(v) for v in result["summary"]["overall"].values()) == OVERALL
    assert tuple(str(v) for v in result["summary"]["merged"].values()) == MERGED
    assert result["summary"]["not_computed"] == {}


@pytest.mark.slow  # METEOR's Java start alone takes 10-30 s here
@pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need a Java runtime")
def test_identical_caption_scores_one_by_hand(sentsim_model):
    """slc: one parsed video of two samples; its answer span [0, 40] covers the first of two targets (recall 1/2,
    precision 1) and its caption equals that target's once tokenized (case and the final '.' go)."""
    pytest.importorskip("pycocoevalcap")
    captions = CaptionScorer(sentsim_model)
    try:
        row = etbench.score([s for s in parity_samples() if s["task"] == "slc"], captions)["slc"]["cross_task"]
    finally:
        captions.close()
    # scaled by 1/2 parsed: recall 1/4, precision 1/2 -> F1 1/3 at every threshold
    assert row["F1"] == 0.33333 and row["Failed"] == 1
    # one identical pair per threshold: BLEU, METEOR, ROUGE-L 1; cosine 1; CIDEr 0 (one reference: idf log(1) = 0)
    assert {k: row[k] for k in CAPTION_KEYS} == {**dict.fromkeys(CAPTION_KEYS, 1.0), "CIDEr": 0.0}


def test_caption_metrics_say_what_is_missing(monkeypatch):
    pytest.importorskip("pycocoevalcap")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    captions = CaptionScorer(None)
    dvc = [s for s in parity_samples() if s["task"] == "dvc"]
    row = etbench.score(dvc, captions)["dvc"]["youcook2"]
    assert row["F1"] == OFFICIAL["dvc"]["youcook2"]["F1"] and all(row[k] is None for k in CAPTION_KEYS)
    missing = captions.missing()
    assert "no Java runtime" in missing["METEOR"] and "no Java runtime" in missing["SentSim"]
