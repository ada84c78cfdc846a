"""HF processor configs (`preprocessor_config.json`, `video_preprocessor_config.json`) <-> `PreprocessConfig`.

Read: the image processor's `size` {shortest_edge, longest_edge} (or the older `min_pixels` / `max_pixels`),
patch / temporal patch / merge sizes and mean/std; the video processor's `size` (Qwen3-VL's
`Qwen3VLVideoProcessor` bounds the whole clip, T*H*W: budget "clip"; Qwen2-VL's bounds each frame) and `fps`.
A directory without a video config uses the image rule per frame (what transformers' Qwen2.5-VL processor does
with the hub's single preprocessor_config.json) for Qwen2.5-VL, the family default for Qwen3-VL. A directory
without any processor config gets the family default (recorded as such in the checkpoint's source).
STRIDE checkpoints (architecture `Qwen3VLForProactiveMDM`) stream frames with a per-frame bound of 256 merged
tokens (the reference's `frame_max_tokens`); the import records that.

Write: both files with the keys transformers' `Qwen2VLImageProcessor` and `Qwen3VLVideoProcessor` /
`Qwen2VLVideoProcessor` read. Export writes the imported files back unchanged while they still describe the
checkpoint's preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig

PREPROCESSOR_FILE = "preprocessor_config.json"
VIDEO_PREPROCESSOR_FILE = "video_preprocessor_config.json"
PROCESSOR_CLASS = {"qwen3_vl": "Qwen3VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
STRIDE_ARCHITECTURE = "Qwen3VLForProactiveMDM"
STRIDE_FRAME_TOKENS = 256


def read_processor_files(directory: str | Path) -> tuple[dict | None, dict | None]:
    """(preprocessor_config.json, video_preprocessor_config.json) of an HF directory; None where absent."""
    out = []
    for name in (PREPROCESSOR_FILE, VIDEO_PREPROCESSOR_FILE):
        path = Path(directory) / name
        if not path.is_file():
            out.append(None)
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{str(path)!r} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{str(path)!r} must hold a JSON object")
        out.append(data)
    return out[0], out[1]


def hf_dir_preprocessing(directory: str | Path, config) -> tuple[PreprocessConfig, dict[str, Any]]:
    """An HF directory's preprocessing for model `config` (a QwenVLConfig), and the provenance fields recorded in
    the checkpoint's source (the processor files as read, and which of them it came from). Used by
    `stvl convert import` and by the direct load of an HF directory alike."""
    image, video = read_processor_files(directory)
    pre = preprocess_from_hf(config.default_preprocessing(), image, video, architecture=config.architecture)
    used = ", ".join(n for n, d in ((PREPROCESSOR_FILE, image), (VIDEO_PREPROCESSOR_FILE, video)) if d)
    return pre, {"hf_preprocessor_config": image, "hf_video_preprocessor_config": video,
                 "preprocessing_from": used or "the family default (no HF processor config)"}


def _bounds(d: dict) -> dict[str, int]:
    size = d.get("size") if isinstance(d.get("size"), dict) else {}
    out = {}
    for ours, new, old in (("min_pixels", "shortest_edge", "min_pixels"), ("max_pixels", "longest_edge", "max_pixels")):
        value = size.get(new, d.get(old))
        if value is not None:
            out[ours] = int(value)
    return out


def preprocess_from_hf(base: PreprocessConfig, image: dict | None, video: dict | None, *, architecture: str = ""
                       ) -> PreprocessConfig:
    """The checkpoint's preprocessing from its HF processor configs (None: absent) over `base`, the family default
    for the model's patch sizes (`QwenVLConfig.default_preprocessing`)."""
    family = base.family
    over: dict[str, Any] = {}
    try:
        if image is not None:
            for key in ("patch_size", "temporal_patch_size", "merge_size"):
                if image.get(key) is not None:
                    over[key] = int(image[key])
            for key in ("image_mean", "image_std"):
                if image.get(key) is not None:
                    over[key] = tuple(float(x) for x in image[key])
            over["image"] = _bounds(image)
            if video is None and family == "qwen2_5_vl":
                over["video"] = {**_bounds(image), "budget": "frame"}
        if video is not None:
            clip = video.get("video_processor_type", "Qwen3VLVideoProcessor" if family == "qwen3_vl" else "") \
                == "Qwen3VLVideoProcessor"
            over["video"] = {**_bounds(video), "budget": "clip" if clip else "frame"}
            if video.get("fps") is not None:
                over["frames"] = {"fps": float(video["fps"])}
        if architecture == STRIDE_ARCHITECTURE:  # the reference streams frames at <= 256 merged tokens each
            over["video"] = {**over.get("video", {}), "budget": "frame", "max_tokens_per_frame": STRIDE_FRAME_TOKENS}
            over["video"].setdefault("max_pixels", STRIDE_FRAME_TOKENS * 32 * 32)
        return base.updated(over, source="HF processor config")
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"HF processor config is invalid: {e}") from None


def preprocess_to_hf(cfg: PreprocessConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(preprocessor_config.json, video_preprocessor_config.json) dicts that transformers' processors read."""
    common = {"patch_size": cfg.patch_size, "temporal_patch_size": cfg.temporal_patch_size,
              "merge_size": cfg.merge_size, "image_mean": list(cfg.image_mean), "image_std": list(cfg.image_std),
              "do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
              "do_normalize": True, "do_convert_rgb": True, "processor_class": PROCESSOR_CLASS[cfg.family]}
    image = {**common, "size": {"shortest_edge": cfg.image.min_pixels, "longest_edge": cfg.image.max_pixels},
             "image_processor_type": "Qwen2VLImageProcessor"}
    vtype = "Qwen3VLVideoProcessor" if cfg.video.budget == "clip" else "Qwen2VLVideoProcessor"
    video = {**common, "size": {"shortest_edge": cfg.video.min_pixels, "longest_edge": cfg.video.max_pixels},
             "fps": cfg.frames.fps, "video_processor_type": vtype}
    return image, video


def processor_files_for_export(cfg: PreprocessConfig, source: dict, base: PreprocessConfig, *,
                               architecture: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The processor files to write: the imported ones when they still describe `cfg`, else fresh ones."""
    image, video = source.get("hf_preprocessor_config"), source.get("hf_video_preprocessor_config")
    if image is not None or video is not None:
        try:
            if preprocess_from_hf(base, image, video, architecture=architecture) == cfg:
                fresh = preprocess_to_hf(cfg)
                return image if image is not None else fresh[0], video if video is not None else fresh[1]
        except CheckpointError:
            pass
    return preprocess_to_hf(cfg)
