"""Typed config of a Grain pipeline (frozen dataclasses; unknown keys are refused by `from_dict`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from stvl_jax.errors import ConfigError

from data_pipelines.formats.stride import StrideWindowConfig
from data_pipelines.strefer.training import StreferTextConfig
from stvl_jax.models.qwen_vl.host.positions import PositionsConfig
from stvl_jax.models.qwen_vl.host.preprocess import PIXEL_DTYPES, PIXEL_LAYOUTS, PreprocessConfig

FORMATS = ("chat", "streamo", "stride", "strefer")


@dataclass(frozen=True)
class PipelineConfig:
    """One pipeline: index -> batches.

    index: JSONL or ArrayRecord file of records in `format`, or a prepared TFDS dataset "tfds:NAME/SPLIT[@DATA_DIR]"
      (its `record` feature; e.g. the Strefer engine's output "tfds:strefer/train@OUT"):
      chat    {"messages": [{"role", "content": str | [{"type": "text"|"image"|"video", ...}]}]}; a video part
              {"path", "start", "end", "fps", "relative_times"} (all but path optional; relative_times: the
              Qwen3-VL frame stamps count from `start`, the clip shown as a video of its own)
      streamo the Streamo stream format ({"messages": [...user "<stream>" turns...], "videos": [path]})
      stride  STRIDE activation samples ([text, video, activation_output] or {"data": [...]})
      strefer the Strefer engine's examples (its `record` and `instructions` features): one chat per clip of the
              text pairs `strefer` selects (`data_pipelines.strefer.training`; `<k>` tokens in the tokenizer)
    Relative media paths resolve against `media_root`, default the index file's directory.
    preprocess: the model's preprocessing (resize, normalization, frame sampling: `PreprocessConfig`); in a
      dict, the keys given are merged into the family default. `stvl train` merges them into the initial
      checkpoint's preprocessing instead (or the model family's default), and writes the result into every
      checkpoint. positions: the model's M-RoPE settings (`stvl train` takes the model's).
    pixel_dtype: "float32" (default) = pixel rows normalized exactly as HF's processor; "uint8" = the raw
      pixels in the same row layout (a quarter of the bytes and no normalization on the host), for models
      that normalize on the device (the stvl_jax Qwen-VL vision tower does so for integer pixel values).
    pixel_layout: "hf" (default) = rows (N, C*T*P*P) as HF's processor; "channels_last" (uint8 only) = rows
      (N, T*P*P, C), cheaper to build on the host; the stvl_jax vision tower permutes them on the device;
      "frames" (uint8 only) = the frames themselves as flat bytes, no patchify on the host at all (the stvl_jax
      vision tower gathers the patch rows on the device; not for transformers, which expects HF rows).
    zero_pixels: every decoded frame black (same count and size): the evaluations' black-frame control.
    """

    index: str
    tokenizer: str
    format: str = "chat"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig.qwen3_vl)
    positions: PositionsConfig = field(default_factory=PositionsConfig)
    pixel_dtype: str = "float32"  # or "uint8" (see above)
    pixel_layout: str = "hf"  # or "channels_last", "frames" (see above)
    batch_size: int = 4
    length_buckets: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    padding_side: str = "right"  # "left" for generation
    patch_buckets: tuple[int, ...] | None = None  # pad pixel rows to a bucket; adds num_valid_* fields
    streamo_fps: float = 1.0
    # Streamo: each state-only turn is replaced in the input, with this probability, by one of the other two
    # states (its label keeps the true state), against copying the previous second's state; the streaming
    # evaluation feeds back the model's own states. Not part of Streamo's recipe.
    streamo_state_noise: float = 0.0
    stride: StrideWindowConfig = field(default_factory=StrideWindowConfig)
    stride_fps: float = 1.0
    strefer: StreferTextConfig = field(default_factory=StreferTextConfig)
    zero_pixels: bool = False
    media_root: str | None = None
    shuffle: bool = True
    seed: int = 0
    num_epochs: int | None = 1  # None = repeat forever
    shard: str = "jax_process"  # "jax_process" | "none" | "i/n"
    worker_count: int = 0
    worker_buffer_size: int = 2
    decode_threads: int = 1
    decode_timeout_s: float = 60.0
    strict: bool = False
    drop_remainder: bool = True

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.pixel_dtype not in PIXEL_DTYPES:
            raise ConfigError(f"pixel_dtype must be one of {PIXEL_DTYPES}, got {self.pixel_dtype!r}")
        if self.pixel_layout not in PIXEL_LAYOUTS:
            raise ConfigError(f"pixel_layout must be one of {PIXEL_LAYOUTS}, got {self.pixel_layout!r}")
        if self.pixel_layout != "hf" and self.pixel_dtype != "uint8":
            raise ConfigError(f"pixel_layout={self.pixel_layout!r} needs pixel_dtype='uint8' (pixels normalized on "
                              f"the device)")
        if self.pixel_layout == "frames" and self.patch_buckets is not None:
            raise ConfigError("patch_buckets pad patch rows, and pixel_layout='frames' has none (flat frame bytes); "
                              "the model pads frames to static sizes itself (vision buckets)")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if not self.length_buckets or list(self.length_buckets) != sorted(set(self.length_buckets)):
            raise ConfigError(f"length_buckets must be increasing and non-empty, got {self.length_buckets}")
        if self.patch_buckets is not None and list(self.patch_buckets) != sorted(set(self.patch_buckets)):
            raise ConfigError(f"patch_buckets must be increasing, got {self.patch_buckets}")
        if not 0.0 <= self.streamo_state_noise <= 1.0:
            raise ConfigError(f"streamo_state_noise must be in [0, 1], got {self.streamo_state_noise}")
        if self.shard not in ("jax_process", "none") and not _parse_shard(self.shard):
            raise ConfigError(f"shard must be 'jax_process', 'none' or 'i/n', got {self.shard!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown pipeline config keys {sorted(unknown)}; known: {sorted(known)}")
        if isinstance(d.get("preprocess"), dict):  # keys merged into the family's default (qwen3_vl if unnamed)
            pre = d["preprocess"]
            try:
                d["preprocess"] = PreprocessConfig.default(pre.get("family", "qwen3_vl")).updated(
                    pre, source="pipeline preprocess")
            except ValueError as e:
                raise ConfigError(f"pipeline preprocess: {e}") from None
        if isinstance(d.get("positions"), dict):
            d["positions"] = PositionsConfig.from_dict(d["positions"], source="pipeline positions")
        for key, typ in (("stride", StrideWindowConfig),):
            if isinstance(d.get(key), dict):
                sub_known = {f.name for f in dataclasses.fields(typ)}
                bad = set(d[key]) - sub_known
                if bad:
                    raise ConfigError(f"unknown {key} config keys {sorted(bad)}; known: {sorted(sub_known)}")
                d[key] = typ(**{k: tuple(v) if isinstance(v, list) else v for k, v in d[key].items()})
        if isinstance(d.get("strefer"), dict):
            d["strefer"] = StreferTextConfig.from_dict(d["strefer"])
        for key in ("length_buckets", "patch_buckets"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def _parse_shard(s: str):
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError:
        return None
    return (i, n) if 0 <= i < n else None
