"""E.T. Bench caption metrics of dvc/slc answers: BLEU-1..4, METEOR, ROUGE-L, CIDEr and SentSim, as the official
`compute_metrics.py` computes them.

Per threshold t, every predicted (span, caption) is paired with each target caption whose span has IoU >= t with
it, or, when none does, with a random string of 10-20 lowercase letters (a reference it cannot match; the official
code draws it unseeded, which leaves its SentSim slightly random, here it is seeded). All captions are PTB-tokenized
(Stanford CoreNLP through pycocoevalcap: lower case, punctuation removed; needs Java), each metric is computed per
video over its pairs and averaged over the parsed videos; the reported number is the mean over the 4 thresholds.
SentSim is the mean dot product of all-MiniLM-L6-v2 embeddings (normalized: the cosine) of reference and
prediction, from a local sentence-transformers directory (never downloaded).

What cannot be computed is reported as None with the reason in `missing()`: no Java runtime on PATH (every
caption metric: the tokenizer runs on Java), pycocoevalcap not installed, or no SentSim model given.
sentence-transformers (and with it torch) is imported only when a SentSim model directory is given.
"""

from __future__ import annotations

import os
import random
import shutil
import string
from collections.abc import Sequence

import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.eval.etbench_metrics import THRESHOLDS, dvc_iou, r5

COCO_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
METRICS = COCO_METRICS + ("SentSim",)


class CaptionScorer:
    """Caption metrics and the SentSim similarity (also used by the choice tasks' fallback)."""

    def __init__(self, sentsim_model: str | None = None, seed: int = 0):
        self.java = shutil.which("java")
        try:
            import pycocoevalcap  # noqa: F401
            self.coco = True
        except ImportError:
            self.coco = False
        self._st = _load_sentence_model(sentsim_model) if sentsim_model else None
        self._rng = random.Random(seed)
        self._meteor = None

    def missing(self) -> dict[str, str]:
        """{metric: why it is not computed} for the caption metrics this scorer cannot compute."""
        why = {}
        if not self.coco:
            why.update({m: "pycocoevalcap is not installed" for m in METRICS})
        elif not self.java:
            why.update({m: "no Java runtime on PATH (the PTB tokenizer and METEOR run on Java)" for m in METRICS})
        if self._st is None:
            why.setdefault("SentSim", "no SentSim model (--sentsim-model DIR, a local all-MiniLM-L6-v2)")
        return why

    @property
    def has_similarity(self) -> bool:
        return self._st is not None

    def similarity(self, a: str, b: str) -> float:
        """Dot product of the two texts' embeddings (the official `compute_sim`)."""
        from sentence_transformers.util import dot_score

        return float(dot_score(self._st.encode([a]), self._st.encode([b]))[0, 0].cpu())

    def score(self, videos: dict[str, dict]) -> dict[str, float | None]:
        """{metric: mean over thresholds of the per-video means, rounded}; None for what cannot be computed.
        `videos`: `etbench_metrics.dense_parse` output."""
        missing = self.missing()
        out: dict[str, float | None] = {m: None for m in METRICS}
        todo = [m for m in METRICS if m not in missing]
        if not todo or not videos:
            return out | {m: 0 for m in todo}  # nothing parsed: the official 0s
        pairs = [self._pairs(videos, t) for t in THRESHOLDS]
        # one tokenizer run for every text of every threshold (the official code runs it per scorer and
        # threshold; PTB tokenization is line by line, so the tokens are the same)
        texts = list(dict.fromkeys(x for by_vid in pairs for vid_pairs in by_vid.values() for pair in vid_pairs
                                   for x in pair))
        tokens = self._tokenize(texts)
        per_t = [self._score_at(by_vid, tokens, todo) for by_vid in pairs]
        return out | {m: r5(sum(s[m] for s in per_t) / len(per_t)) for m in todo}

    def _pairs(self, videos: dict[str, dict], t: float) -> dict[str, list[tuple[str, str]]]:
        """{video: [(answer caption, reference)]}: each answer caption with every target caption whose span has
        IoU >= t with its span, or with a fresh random reference when none has."""
        out = {}
        for vid, v in videos.items():
            out[vid] = []
            for span, caption in zip(v["spans"], v["captions"]):
                refs = [g for g_span, g in zip(v["tgt"], v["g"]) if dvc_iou(span, g_span) >= t]
                out[vid] += [(_ascii(caption), _ascii(ref)) for ref in refs or [self._random_reference()]]
        return out

    @staticmethod
    def _tokenize(texts: list[str]) -> dict[str, str]:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        try:
            tokens = PTBTokenizer().tokenize({i: [{"caption": x}] for i, x in enumerate(texts)})
        except OSError as e:  # it writes its input next to its jar and runs `java`
            raise InputError(f"caption metrics: pycocoevalcap's PTB tokenizer could not run ({e})") from None
        if len(tokens) != len(texts):
            raise InputError(f"caption metrics: the PTB tokenizer (Java) returned {len(tokens)} of {len(texts)} "
                             "captions; check that `java -version` works")
        return {x: tokens[i][0] for i, x in enumerate(texts)}

    def _score_at(self, pairs: dict[str, list[tuple[str, str]]], tokens: dict[str, str],
                  todo: Sequence[str]) -> dict[str, float]:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        scorers = {"ROUGE_L": Rouge(), "CIDEr": Cider()}
        per_video: dict[str, list] = {m: [] for m in todo}
        for vid_pairs in pairs.values():
            g = {i: [tokens[ref]] for i, (_, ref) in enumerate(vid_pairs)}
            r = {i: [tokens[pred]] for i, (pred, _) in enumerate(vid_pairs)}
            if any(m.startswith("Bleu") for m in todo):
                bleu, _ = Bleu(4).compute_score(g, r, verbose=0)
                for n in range(4):
                    per_video[f"Bleu_{n + 1}"].append(bleu[n])
            if "METEOR" in todo:
                per_video["METEOR"].append(self._meteor_scorer().compute_score(g, r)[0])
            for m, scorer in scorers.items():
                per_video[m].append(scorer.compute_score(g, r)[0])
            if "SentSim" in todo:
                per_video["SentSim"].append(self._sentsim([x[0] for x in g.values()], [x[0] for x in r.values()]))
        return {m: float(np.mean(v)) for m, v in per_video.items()}

    def _sentsim(self, refs: list[str], preds: list[str]) -> float:
        from sentence_transformers.util import dot_score

        sims = dot_score(self._st.encode(refs), self._st.encode(preds)).cpu()
        diag = [sims[i, i].item() for i in range(sims.shape[0])]
        return sum(diag) / len(diag)

    def _meteor_scorer(self):
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()  # one Java process for the whole run
        return self._meteor

    def _random_reference(self) -> str:
        return "".join(self._rng.choice(string.ascii_lowercase) for _ in range(self._rng.randint(10, 20)))

    def close(self) -> None:
        self._meteor = None  # pycocoevalcap's Meteor ends its Java process when collected


def _ascii(text: str) -> str:
    """The official `remove_nonascii`: every non-ASCII character becomes a space."""
    return "".join(c if ord(c) < 128 else " " for c in text)


def _load_sentence_model(path: str):
    if not os.path.isdir(path):
        raise InputError(f"--sentsim-model {path!r} is not a directory (a local sentence-transformers model, e.g. "
                         "all-MiniLM-L6-v2; it is never downloaded)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InputError("--sentsim-model needs sentence-transformers (pip install sentence-transformers)") from None
    try:
        return SentenceTransformer(path, device="cpu", local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"--sentsim-model {path!r} is not a sentence-transformers model directory ({e})") from None
