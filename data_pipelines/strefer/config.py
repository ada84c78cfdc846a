"""Typed configuration of the Strefer data engine (frozen dataclasses; `EngineConfig.from_dict` refuses unknown
keys, naming them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from stvl_jax.errors import ConfigError

ANNOTATORS = ("synthetic", "stvl", "openai")
MASKLET_SOURCES = ("ground_truth", "generator")
SHOT_DETECTORS = ("content", "adaptive")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")


@dataclass(frozen=True)
class AnnotatorConfig:
    """Stage 2. `name`: synthetic | stvl | openai.

    stvl: `checkpoint` (an stvl checkpoint or HF directory; `tokenizer` defaults to it).
    openai: `url` (base URL of an OpenAI-compatible server, e.g. http://host:8000/v1), `model`, the API key read
    from the environment variable `api_key_env` (never stored in the config). Sampling as Strefer's referring
    parser (temperature 0.85, top_p 0.9, `tries` 3 attempts per prompt before the clip is skipped)."""

    name: str = "synthetic"
    checkpoint: str | None = None
    tokenizer: str | None = None
    url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    num_frames: int = 8  # frames shown to a model annotator per clip
    max_new_tokens: int = 512
    temperature: float = 0.85
    top_p: float = 0.9
    tries: int = 3
    timeout_s: float = 120.0

    def __post_init__(self):
        if self.name not in ANNOTATORS:
            raise ConfigError(f"annotator must be one of {ANNOTATORS}, got {self.name!r}")
        if self.name == "stvl" and not self.checkpoint:
            raise ConfigError("annotator 'stvl' needs a checkpoint (an stvl checkpoint or an HF directory)")
        if self.name == "openai" and not (self.url and self.model):
            raise ConfigError("annotator 'openai' needs url (e.g. http://localhost:8000/v1) and model")
        if self.tries < 1 or self.num_frames < 1:
            raise ConfigError(f"annotator tries and num_frames must be >= 1, got {self.tries}, {self.num_frames}")


@dataclass(frozen=True)
class EngineConfig:
    """The whole engine. Stage 1: shots (PySceneDetect `shot_detector` at `shot_threshold`, shots shorter than
    `min_shot_frames` merged by the detector) cut into segments of `segment_seconds` (a last piece shorter than
    `min_segment_seconds` is dropped and counted). Stage 3: `num_frames` frames sampled uniformly over the clip
    (Strefer: 32) carry the masklets; `masklets` = ground_truth (the synthetic set's) or generator (the
    PyTorch referring masklet generator, configured by `generator`). Stage 5: timestamps as `<k>` tokens,
    k in [0, num_time_tokens)."""

    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    shot_detector: str = "content"
    shot_threshold: float = 27.0
    min_shot_frames: int = 15
    segment_seconds: float = 8.0
    min_segment_seconds: float = 2.0
    num_frames: int = 32
    masklets: str = "ground_truth"
    generator: dict = field(default_factory=dict)
    num_time_tokens: int = 32
    questions_per_family: int = 2
    seed: int = 0

    def __post_init__(self):
        if self.shot_detector not in SHOT_DETECTORS:
            raise ConfigError(f"shot_detector must be one of {SHOT_DETECTORS}, got {self.shot_detector!r}")
        if self.masklets not in MASKLET_SOURCES:
            raise ConfigError(f"masklets must be one of {MASKLET_SOURCES}, got {self.masklets!r}")
        if self.masklets == "ground_truth" and self.annotator.name != "synthetic":
            raise ConfigError("masklets='ground_truth' needs the synthetic annotator (only it has ground truth); "
                              "use masklets='generator' with a model annotator")
        if not 0 < self.min_segment_seconds <= self.segment_seconds:
            raise ConfigError(f"need 0 < min_segment_seconds <= segment_seconds, got {self.min_segment_seconds}, "
                              f"{self.segment_seconds}")
        if self.num_frames < 2 or self.num_time_tokens < 2 or self.min_shot_frames < 1:
            raise ConfigError("num_frames and num_time_tokens must be >= 2, min_shot_frames >= 1")
        if self.questions_per_family < 1:
            raise ConfigError(f"questions_per_family must be >= 1, got {self.questions_per_family}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "strefer config") -> "EngineConfig":
        d = dict(d)
        _refuse_unknown(cls, d, source)
        if isinstance(d.get("annotator"), str):
            d["annotator"] = {"name": d["annotator"]}
        if isinstance(d.get("annotator"), dict):
            _refuse_unknown(AnnotatorConfig, d["annotator"], f"{source} annotator")
            d["annotator"] = AnnotatorConfig(**d["annotator"])
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _refuse_unknown(cls, d: dict, source: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
