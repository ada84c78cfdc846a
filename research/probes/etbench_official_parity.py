"""Run E.T. Bench's official `compute_metrics.py` and `stvl_jax.eval.etbench.score` on the same predictions and
compare every number (not part of CI: it needs a local copy of the official script).

    python research/probes/etbench_official_parity.py --official DIR [--fuzz 2000]

DIR holds the official script's functions, unchanged, as an importable module `official_cm.py` (with nncore's
`temporal_iou`, torch, pycocoevalcap and sentence-transformers importable; `SentenceTransformerSimilarity(path)`
taking a local model directory; `PTBTokenizer()` without `verbose`, which pycocoevalcap 1.2 lacks) plus
`evaluate_all(samples, st) -> (collected, met, overall row, merged row)`: its `__main__` dispatch and table
arithmetic without the file IO and logging. The copy used (2026-12-07) was read from a public GitHub mirror of
the HF repository's `evaluation/compute_metrics.py` through the code search (its `rvq_eval` is the one with the
"(X)" search first); it is not kept in this repository (CC BY-NC-SA code). The prediction set is
`tests/etbench_helpers.parity_samples()` (printed as the expected numbers of tests/eval/test_etbench_official.py)
plus `--fuzz` random answers per task. Both sides draw the dvc/slc unmatched-caption reference as the same fixed
string so that SentSim compares exactly (the official code draws it unseeded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from etbench_helpers import WORDS, parity_samples, tiny_sentence_model  # noqa: E402

from stvl_jax.eval import etbench  # noqa: E402
from stvl_jax.eval.etbench_captions import CaptionScorer  # noqa: E402

REFERENCE = "qzqzqzqzqzqz"


def fuzz_samples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    toks = ["starts", "ends", "at", "5", "12.5", "-", "to", "seconds", ",", ".", "\n", "0:30", "description:",
            "start time:", "end time:", "happens", "3.25", "40", "7", "10", "0", *WORDS[:8]]

    def answer():
        return " ".join(rng.choice(toks) for _ in range(rng.randint(1, 14)))

    def span(lo=0, hi=60):
        a = rng.choice([rng.randint(lo, hi), round(rng.uniform(lo, hi), 1)])
        return [a, a + rng.choice([rng.randint(1, 20), round(rng.uniform(0.5, 20), 1)])]

    out = []
    for i in range(n):
        base = {"idx": 10_000 + i, "video": f"fuzz_{i % (n // 3 + 1)}.mp4", "a": answer()}
        out += [{**base, "task": "tvg", "source": "fz", "tgt": span()},
                {**base, "task": "tal", "source": "fz", "tgt": [span() for _ in range(rng.randint(1, 3))]},
                {**base, "task": "tem", "source": "fz", "tgt": [span() for _ in range(rng.randint(1, 3))]},
                {**base, "task": "evs", "source": "fz", "tgt": [span() for _ in range(rng.randint(1, 3))]},
                {**base, "task": "vhd", "source": "fz", "tgt": [span() for _ in range(rng.randint(1, 3))]}]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--fuzz", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, args.official)
    import official_cm

    official_cm.random_string = lambda n: REFERENCE
    model = tiny_sentence_model(tempfile.mkdtemp())
    samples = parity_samples() + fuzz_samples(args.fuzz)
    st = official_cm.SentenceTransformerSimilarity(model)
    collected, met, overall, merged = official_cm.evaluate_all([dict(s) for s in samples], st)
    captions = CaptionScorer(model)
    captions._random_reference = lambda: REFERENCE
    ours = etbench.score(samples, captions)
    bad = 0
    for task, by_src in collected.items():
        for src, row in by_src.items():
            for k, v in row.items():
                if ours[task][src].get(k) != v:
                    bad += 1
                    print(f"MISMATCH {task}/{src} {k}: official {v} ours {ours[task][src].get(k)}")
    ours_overall = tuple(str(v) for v in ours["summary"]["overall"].values())
    if len(met) == 14 and ours_overall != overall:
        bad += 1
        print(f"MISMATCH overall: official {overall} ours {ours_overall}")
    if merged and tuple(str(v) for v in ours["summary"]["merged"].values()) != merged:
        bad += 1
        print(f"MISMATCH merged: official {merged} ours {ours['summary']['merged']}")
    print(json.dumps({"official": collected, "overall": overall, "merged": merged}, indent=1))
    print(f"{sum(len(v) for v in collected.values())} rows, {len(samples)} samples: {bad} mismatches")
    return int(bad > 0)


if __name__ == "__main__":
    sys.exit(main())
