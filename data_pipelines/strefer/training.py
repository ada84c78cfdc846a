"""The engine's examples as training and evaluation records: text answers with `<k>` time tokens, the clip as a
video part. Region (masklet) inputs are a later step: a pair that refers to a region (`<region>` in its question,
a non-empty `regions` list) is never used here, so `region_action` and `region_location` have nothing to train on
and `appearance_reentry` keeps only `first_appear`.

The Grain pipeline's `strefer` format reads two features of each example (`FEATURES`: the `record`, whose first
video part is the clip, and the `instructions`, which carry each pair's family) and builds one multi-turn chat
per clip: the video, then the selected question / answer turns in an order drawn per epoch from Grain's
per-record generator (the engine writes them family by family; a fixed order would teach the position of a
family). The evaluation asks each pair on its own (`pair_record`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.strefer.instructions import FAMILIES
from data_pipelines.strefer.time_tokens import time_tokens_in
from stvl_jax.errors import ConfigError

FEATURES = ("record", "instructions")  # what the `strefer` format reads of each TFDS example
REGION_ONLY_FAMILIES = ("region_action", "region_location")  # every pair of these refers to a region
TEXT_FAMILIES = tuple(f for f in FAMILIES if f not in REGION_ONLY_FAMILIES)


@dataclass(frozen=True)
class StreferTextConfig:
    """The `strefer` pipeline format: which families to train on and the dataset's number of time tokens (a pair
    naming `<k>` with k >= num_time_tokens is a bad record: the data and the tokenizer disagree)."""

    families: tuple[str, ...] = TEXT_FAMILIES
    num_time_tokens: int = 32
    shuffle_turns: bool = True

    def __post_init__(self):
        if isinstance(self.families, (list, str)):
            object.__setattr__(self, "families", tuple([self.families] if isinstance(self.families, str)
                                                       else self.families))
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"strefer.families: unknown family {unknown[0]!r} (known: {', '.join(FAMILIES)})")
        regional = [f for f in self.families if f in REGION_ONLY_FAMILIES]
        if regional:
            raise ConfigError(f"strefer.families: {regional[0]!r} questions all refer to a region, and region "
                              f"inputs are not trained yet (text families: {', '.join(TEXT_FAMILIES)})")
        if not self.families:
            raise ConfigError("strefer.families is empty")
        if self.num_time_tokens < 2:
            raise ConfigError(f"strefer.num_time_tokens must be >= 2, got {self.num_time_tokens}")

    @classmethod
    def from_dict(cls, d: dict) -> "StreferTextConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = set(d) - known
        if bad:
            raise ConfigError(f"unknown strefer config keys {sorted(bad)}; known: {sorted(known)}")
        return cls(**d)


def _json_field(rec: dict, key: str, source: str):
    value = rec.get(key) if isinstance(rec, dict) else None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise AnnotationError("bad_json", f"feature {key!r} is not JSON ({e.msg})", source) from None
    if value is None:
        raise AnnotationError("missing_field", f"example has no {key!r} feature", source)
    return value


def clip_parts(rec: dict, source: str) -> tuple[dict, str, list[dict]]:
    """An engine example ({"record", "instructions"}, JSON text or parsed) -> (the clip's video part, clip id,
    pairs)."""
    record = _json_field(rec, "record", source)
    pairs = _json_field(rec, "instructions", source)
    msgs = record.get("messages") if isinstance(record, dict) else None
    first = msgs[0].get("content") if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) else None
    video = next((p for p in first if isinstance(p, dict) and p.get("type") == "video"), None) \
        if isinstance(first, list) else None
    if video is None:
        raise AnnotationError("missing_field", "the record's first turn has no video part (the clip)", source)
    if not isinstance(pairs, list):
        raise AnnotationError("bad_field", "feature 'instructions' is not a list of pairs", source)
    # the clip is all the model sees: its frame stamps count from its start, as its <k> tokens do
    return {**video, "relative_times": True}, str(record.get("clip_id", source)), pairs


def text_pairs(pairs: list, cfg: StreferTextConfig, source: str) -> list[dict]:
    """The pairs this step trains on: family in `cfg.families`, no region. A malformed pair, or one that names a
    time token >= num_time_tokens, is an AnnotationError."""
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in ("family", "question", "answer")):
            raise AnnotationError("bad_field", f"pair {i} lacks a family, question or answer string", source)
        if p.get("regions") or p["family"] not in cfg.families:
            continue
        ks = time_tokens_in(p["question"]) + time_tokens_in(p["answer"])
        if ks and max(ks) >= cfg.num_time_tokens:
            raise AnnotationError("bad_field", f"pair {i} names <{max(ks)}> but strefer.num_time_tokens is "
                                  f"{cfg.num_time_tokens}", source)
        out.append(p)
    return out


def training_record(rec: dict, cfg: StreferTextConfig, rng: np.random.Generator | None, source: str) -> dict:
    """One clip -> a `chat` record: the video part and the first question in one user turn, then each answer and
    the next question; turn order drawn from `rng` (`cfg.shuffle_turns`)."""
    video, clip_id, pairs = clip_parts(rec, source)
    pairs = text_pairs(pairs, cfg, source)
    if not pairs:
        raise AnnotationError("no_text_pairs", f"clip {clip_id!r} has no pair of the families "
                              f"{', '.join(cfg.families)} without a region", source)
    if cfg.shuffle_turns and rng is not None:
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    messages = []
    for i, p in enumerate(pairs):
        content = [video, {"type": "text", "text": p["question"]}] if i == 0 else p["question"]
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": p["answer"]}]
    return {"messages": messages, "clip_id": clip_id}


def pair_record(video: dict | None, pair: dict) -> dict:
    """One question with its answer (what the evaluation scores): the clip then the question (`video=None`: the
    question alone, the text-only control)."""
    question = {"type": "text", "text": pair["question"]}
    content = [question] if video is None else [video, question]
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": pair["answer"]}]}
