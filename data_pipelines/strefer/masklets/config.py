"""Typed config of the referring masklet generator (frozen dataclasses; `from_dict` refuses unknown keys).

Plain data only (strings and numbers), so a Beam pipeline can ship it to its workers; models are loaded from
the paths in `MaskletGenerator.setup`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from stvl_jax.errors import ConfigError

DETECTORS = ("grounding_dino", "owlv2", "oracle")
TRACKERS = ("sam2", "hf")
MATCHERS = ("synthetic", "grounding", "vlm", "none")


@dataclass(frozen=True)
class DetectorConfig:
    """kind: grounding_dino | owlv2 (an HF directory in `path`, e.g. IDEA-Research/grounding-dino-tiny
    downloaded) | oracle (ground-truth boxes from the caller's `boxes_fn`, jittered).
    Strefer's GroundingDINO thresholds: box 0.25, text 0.3, then detections scoring under 0.5 or with an empty
    label are dropped."""

    kind: str = "grounding_dino"
    path: str | None = None
    box_threshold: float = 0.25
    text_threshold: float = 0.3
    min_score: float = 0.5
    owlv2_threshold: float = 0.1  # OWLv2's own post-processing default; min_score still applies
    oracle_jitter: float = 0.05  # oracle: each box edge moves by N(0, jitter * box side) pixels
    seed: int = 0

    def __post_init__(self):
        if self.kind not in DETECTORS:
            raise ConfigError(f"masklets detector.kind must be one of {DETECTORS}, got {self.kind!r}")
        if self.kind != "oracle" and not self.path:
            raise ConfigError(f"masklets detector.kind={self.kind!r} needs detector.path (an HF model directory)")
        if self.oracle_jitter < 0:
            raise ConfigError(f"masklets detector.oracle_jitter must be >= 0, got {self.oracle_jitter}")


@dataclass(frozen=True)
class TrackerConfig:
    """backend: sam2 (Meta's `sam2` package: `model_config` is its Hydra config name, `path` a Meta .pt
    checkpoint loaded with weights_only, or None for random weights) | hf (transformers `Sam2VideoModel` from the
    HF directory `path`, e.g. what `stvl convert export` writes). `model_overrides`: Hydra overrides of the Meta
    model config (e.g. "++model.image_size=64" for tiny random test models; a checkpoint needs its own config)."""

    backend: str = "sam2"
    path: str | None = None
    model_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    model_overrides: tuple[str, ...] = ()
    device: str = "cpu"
    mask_threshold: float = 0.0

    def __post_init__(self):
        if self.backend not in TRACKERS:
            raise ConfigError(f"masklets tracker.backend must be one of {TRACKERS}, got {self.backend!r}")
        object.__setattr__(self, "model_overrides", tuple(self.model_overrides))  # a YAML/JSON list
        if self.backend == "hf" and not self.path:
            raise ConfigError("masklets tracker.backend='hf' needs tracker.path (an HF Sam2Video directory)")


@dataclass(frozen=True)
class MatchingConfig:
    """Stage 4, which expression names which masklet: synthetic (the caller's ground-truth boxes at the anchor
    frame) | grounding (the detector run on the anchor frame with each full expression) | vlm (a box-index
    picker passed to `MaskletGenerator(..., box_picker=...)`, as Strefer asks RexSeek) | none."""

    kind: str = "synthetic"
    min_iou: float = 0.5  # a grounded/ground-truth box names a masklet when their IoU at the anchor reaches it

    def __post_init__(self):
        if self.kind not in MATCHERS:
            raise ConfigError(f"masklets matching.kind must be one of {MATCHERS}, got {self.kind!r}")


@dataclass(frozen=True)
class MaskletConfig:
    """torch_threads: torch's intra-op threads in this worker (0: torch's default, one per core). On a shared
    or oversubscribed CPU, 1 thread per worker process is often many times faster (measured 20x for the tiny
    SAM2 with 2 threads on 2 busy cores)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    torch_threads: int = 0

    def __post_init__(self):
        if self.torch_threads < 0:
            raise ConfigError(f"masklets torch_threads must be >= 0, got {self.torch_threads}")

    @classmethod
    def from_dict(cls, d: dict) -> MaskletConfig:
        return _build(cls, d, "masklets")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, d, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where} config must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"unknown {where} config keys {sorted(unknown)}; known: {sorted(fields)}")
    kw = {}
    for name, value in d.items():
        sub = {"detector": DetectorConfig, "tracker": TrackerConfig, "matching": MatchingConfig}.get(name)
        kw[name] = _build(sub, value, f"{where}.{name}") if sub and cls is MaskletConfig else value
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{where} config: {e}") from None
