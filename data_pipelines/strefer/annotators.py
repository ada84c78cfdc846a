"""Stage 2: clip -> metadata (active entities, referring expressions, nouns, action timelines).

    annotator = make_annotator(cfg.annotator)      # in DoFn.setup: models load once per worker
    annotator.setup()
    meta = annotator.annotate(clip, frames, times)  # frames (T, H, W, 3) uint8, times (T,) s from the clip start

Metadata (times in seconds from the clip start):
    {"entities": [{"id": int, "expression": str, "noun": str, "general_noun": str,
                   "actions": [{"action": str, "start": float, "end": float, ...}]}]}
A model's malformed answer (after `tries` attempts) raises AnnotationError("malformed_model_output"); the
pipeline sends the clip to the dead letters with that reason.

Backends: `synthetic` reads the embedded set's ground truth (`synthetic_truth`); `openai` asks an
OpenAI-compatible chat endpoint (`openai_chat`); `stvl` asks this project's Qwen-VL: its chat callable lives on
the JAX side (`stvl_jax.infer.strefer_chat`) and is handed in by `stvl data strefer` (data_pipelines never
imports JAX).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.strefer import prompts
from data_pipelines.strefer.config import AnnotatorConfig
from stvl_jax.errors import ConfigError

# A chat backend: (frames (T, H, W, 3) uint8 or None, times (T,) or None, prompt) -> the model's reply text.
Chat = Callable[[np.ndarray | None, np.ndarray | None, str], str]


class SyntheticAnnotator:
    """The synthetic set's ground truth, as an annotator would report it (see `synthetic_truth`)."""

    name = "synthetic"

    def setup(self) -> None:
        from data_pipelines.strefer.synthetic_truth import TruthReader

        self.truth = TruthReader()

    def annotate(self, clip: dict, frames=None, times=None) -> dict:
        return self.truth.metadata(clip)


class ChatAnnotator:
    """Strefer's three steps asked of a chat model. `chat_factory()` -> Chat, called in `setup` (per worker)."""

    def __init__(self, name: str, chat_factory: Callable[[], Chat], cfg: AnnotatorConfig):
        self.name, self.chat_factory, self.cfg = name, chat_factory, cfg
        self.chat = None

    def setup(self) -> None:
        self.chat = self.chat_factory()

    def _ask(self, frames, times, prompt: str, parse):
        err = None
        for _ in range(self.cfg.tries):
            try:
                return parse(self.chat(frames, times, prompt))
            except AnnotationError as e:  # malformed: ask again (sampling differs), like Strefer's 3 tries
                err = e
        raise err

    def annotate(self, clip: dict, frames: np.ndarray, times: np.ndarray) -> dict:
        idx = np.linspace(0, len(frames) - 1, min(self.cfg.num_frames, len(frames))).round().astype(int)
        f, t = frames[idx], times[idx]
        duration = float(clip["end"] - clip["start"])
        exprs = self._ask(f, t, prompts.ENTITIES_PROMPT,
                          lambda r: prompts.parse_string_list(r, "entity list"))
        exprs = list(dict.fromkeys(exprs))  # one entity per expression
        nouns = self._ask(None, None, prompts.NOUNS_PROMPT.format(entities=json.dumps(exprs)),
                          lambda r: prompts.parse_string_list(r, "generalized nouns", len(exprs)))
        entities = []
        for i, (expr, noun) in enumerate(zip(exprs, nouns), 1):
            acts = self._ask(f, t, prompts.ACTIONS_PROMPT.format(duration=duration, expression=expr),
                             lambda r, e=expr: prompts.parse_actions(r, duration, f"actions of {e!r}"))
            entities.append({"id": i, "expression": expr, "noun": noun.lower(), "general_noun": noun.lower(),
                             "actions": acts})
        return {"entities": entities}


def make_annotator(cfg: AnnotatorConfig, chat_factory: Callable[[], Chat] | None = None):
    """The annotator named by `cfg` (not set up yet). `chat_factory` is required for `stvl` (see module doc)."""
    if cfg.name == "synthetic":
        return SyntheticAnnotator()
    if cfg.name == "openai":
        from data_pipelines.strefer.openai_chat import OpenAIChatFactory

        return ChatAnnotator("openai", chat_factory or OpenAIChatFactory(cfg), cfg)
    if chat_factory is None:
        raise ConfigError("annotator 'stvl' runs this project's JAX Qwen-VL: build the pipeline with "
                          "`stvl data strefer --annotator stvl --checkpoint DIR` (it passes the model's chat)")
    return ChatAnnotator("stvl", chat_factory, cfg)
