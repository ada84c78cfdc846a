"""The Qwen-VL preprocessing config and its numpy rules: `smart_resize`, PIL-bicubic resize, rescale/normalize,
patchify. A checkpoint carries its `PreprocessConfig` (stvl_config.json "preprocessing"); pipelines, eval and
generation helpers read it from there, so a model sees at inference the pixels it was trained on.

Output layout equals transformers' Qwen-VL processors:
- images: each image -> rows of `C*T*P*P` (T = temporal_patch_size, the frame repeated), grid (1, h, w);
- videos: frames grouped in temporal pairs -> grid (t, h, w) with t = ceil(frames / 2) (last frame repeated);
- every row is one P x P patch flattened channel-major (C, T, P, P); rows are ordered merge block by merge
  block (2 x 2 patches of one LLM token are consecutive), blocks in raster order, temporal groups outermost.
Arithmetic follows the HF PIL backend exactly (uint8 bicubic resize in PIL, `x.astype(float64) * (1/255)` cast
to float32, then `(x - mean) / std` in float32) so results are bit-identical. Patchifying happens on the uint8
frames; `dtype=np.uint8` stops there (raw pixels in the same row layout, for normalization on the device:
the model's vision tower does it when it receives integer pixel values, with this config's mean/std).
`layout="channels_last"` (uint8 only) gives each patch as a (T*P*P, C) block instead — rows (N, T*P*P, C), the
same rows in the same order — which the host transposes ~3x faster (channel stays innermost, as decoded); the
vision tower permutes such rows to the HF layout on the device. `layout="frames"` (uint8 only) does not patchify
at all: the resized frames themselves, flattened to bytes (an image once, a video's frames padded to whole
temporal patches); the model gathers the patch rows on the device (`vision_inputs.frame_offsets`). For an
unresized video that is a view of the decoded frames, so the host never touches the pixels before batching.

Numpy, PIL and pydantic only: `data_pipelines` imports this module, and it imports nothing of JAX.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pydantic

from stvl_jax.config_base import StrictConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
FAMILIES = ("qwen3_vl", "qwen2_5_vl")


class ResizeConfig(StrictConfig):
    """The `smart_resize` bounds of one kind of input (images, or video frames).

    budget "frame": min/max_pixels bound H*W of each frame (HF's image processor, Qwen2-VL's video processor);
    "clip": they bound T*H*W of the whole clip (Qwen3-VL's video processor). `max_tokens_per_frame` (merged LLM
    tokens per frame, STRIDE's frame_max_tokens) further caps each frame at max_tokens * (patch*merge)^2 pixels.
    """

    min_pixels: int = pydantic.Field(gt=0)
    max_pixels: int = pydantic.Field(gt=0)
    budget: Literal["frame", "clip"] = "frame"
    max_tokens_per_frame: int | None = pydantic.Field(default=None, gt=0)


class FrameSampling(StrictConfig):
    """How frames are taken from a video that does not say: `fps` frames per second, at most `max_frames`."""

    fps: float = pydantic.Field(default=2.0, gt=0)
    max_frames: int = pydantic.Field(default=32, ge=2)

    @pydantic.field_validator("max_frames")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"max_frames must be even (whole temporal patches), got {v}")
        return v


class PreprocessConfig(StrictConfig):
    """Everything that turns pixels into a Qwen-VL model's inputs; carried by every checkpoint.

    Family defaults (`qwen3_vl()`, `qwen2_5_vl()`) are the released checkpoints' HF processor configs
    (preprocessor_config.json / video_preprocessor_config.json of Qwen3-VL-*-Instruct and
    Qwen2.5-VL-*-Instruct), except `frames.max_frames`, this project's cap (HF's video processor allows 768).
    """

    family: Literal["qwen3_vl", "qwen2_5_vl"]
    patch_size: int = pydantic.Field(gt=0)
    temporal_patch_size: int = pydantic.Field(default=2, gt=0)
    merge_size: int = pydantic.Field(default=2, gt=0)
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image: ResizeConfig
    video: ResizeConfig
    frames: FrameSampling = FrameSampling()

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.image.budget != "frame":
            raise ValueError("image.budget must be 'frame' (an image is one frame)")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        return self

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def qwen3_vl(cls, **overrides) -> "PreprocessConfig":
        base = dict(family="qwen3_vl", patch_size=16, image_mean=HALF, image_std=HALF,
                    image=dict(min_pixels=65536, max_pixels=16777216),
                    video=dict(min_pixels=4096, max_pixels=25165824, budget="clip"))
        return cls.from_dict(merge_dicts(base, overrides), source="qwen3_vl preprocessing")

    @classmethod
    def qwen2_5_vl(cls, **overrides) -> "PreprocessConfig":
        pixels = dict(min_pixels=3136, max_pixels=12845056)
        base = dict(family="qwen2_5_vl", patch_size=14, image_mean=CLIP_MEAN, image_std=CLIP_STD, image=pixels,
                    video=pixels)
        return cls.from_dict(merge_dicts(base, overrides), source="qwen2_5_vl preprocessing")

    @classmethod
    def default(cls, family: str, **overrides) -> "PreprocessConfig":
        """The family's HF default (`overrides` merged into nested sections: `image={"max_pixels": ...}`)."""
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        return getattr(cls, family)(**overrides)

    def updated(self, overrides: Mapping[str, Any] | None, *, source: str = "preprocessing") -> "PreprocessConfig":
        """This config with a partial (nested) dict merged in, e.g. {"image": {"max_pixels": 3136}}."""
        if not overrides:
            return self
        return type(self).from_dict(merge_dicts(self.to_dict(), overrides), source=source)


def merge_dicts(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: `over`'s values win; nested mappings merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Target (h, w): multiples of `factor`, aspect kept as closely as possible, h*w within [min, max] pixels."""
    if min(height, width) <= 0:
        raise ValueError(f"invalid image size {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {height}x{width}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _frame_cap(rule: ResizeConfig, factor: int) -> int:
    cap = rule.max_pixels if rule.budget == "frame" else None
    if rule.max_tokens_per_frame is not None:
        tokens = rule.max_tokens_per_frame * factor**2
        cap = tokens if cap is None else min(cap, tokens)
    return cap


def image_size(height: int, width: int, cfg: PreprocessConfig) -> tuple[int, int]:
    """Resized (h, w) of an image (or of a frame fed as an image, e.g. Streamo's per-second frames)."""
    return smart_resize(height, width, cfg.factor, cfg.image.min_pixels, _frame_cap(cfg.image, cfg.factor))


def video_size(num_frames: int, height: int, width: int, cfg: PreprocessConfig) -> tuple[int, int]:
    """Resized (h, w) of a video's frames. budget "clip" is transformers' Qwen3-VL video rule (T*H*W bounded,
    T rounded to whole temporal patches); "frame" bounds each frame; `max_tokens_per_frame` caps either."""
    rule, factor = cfg.video, cfg.factor
    if rule.budget == "frame":
        return smart_resize(height, width, factor, rule.min_pixels, _frame_cap(rule, factor))
    tf = cfg.temporal_patch_size
    n = max(num_frames, tf)  # fewer frames are padded to one temporal patch (process_video)
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {height}x{width}")
    h, w, t = round(height / factor) * factor, round(width / factor) * factor, round(n / tf) * tf
    if t * h * w > rule.max_pixels:
        beta = math.sqrt(n * height * width / rule.max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < rule.min_pixels:
        beta = math.sqrt(rule.min_pixels / (n * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    cap = _frame_cap(rule, factor)
    if cap is not None and h * w > cap:
        h, w = smart_resize(height, width, factor, 1, cap)
    return h, w


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8 with PIL bicubic (no-op when the size already matches)."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), resample=Image.BICUBIC)) for f in frames])


def _lut(cfg: PreprocessConfig) -> np.ndarray:
    """(3, 256) float32: the HF arithmetic for every uint8 value per channel, so a gather is bit-identical."""
    key = (cfg.image_mean, cfg.image_std)
    if key not in _LUTS:
        v = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
        mean = np.asarray(cfg.image_mean, dtype=np.float32)[:, None]
        std = np.asarray(cfg.image_std, dtype=np.float32)[:, None]
        _LUTS[key] = (v[None, :] - mean) / std
    return _LUTS[key]


_LUTS: dict = {}


PIXEL_DTYPES = ("float32", "uint8")
PIXEL_LAYOUTS = ("hf", "channels_last", "frames")


def row_shape(cfg: PreprocessConfig, layout: str = "hf") -> tuple[int, ...]:
    """Shape of one patch row: (C*T*P*P,) in the HF layout, (T*P*P, C) channels-last; frames are flat bytes, ()."""
    tpp = cfg.temporal_patch_size * cfg.patch_size**2
    return {"hf": (3 * tpp,), "channels_last": (tpp, 3), "frames": ()}[layout]


def normalize_rows(rows: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 patch rows (N, C*T*P*P) -> float32 rows, rescaled and normalized like the HF PIL backend
    (`x.astype(float64) * (1/255)` -> float32, `(x - mean) / std`) via a per-channel lookup table, so the
    result is bit-identical to HF's. Element j of a row is channel j // (T*P*P)."""
    n, d = rows.shape
    lut, r = _lut(cfg), rows.reshape(n, 3, d // 3)
    out = np.empty(r.shape, np.float32)
    for c in range(3):
        out[:, c] = lut[c][r[:, c]]  # (fancy indexing beats np.take(out=) here, which buffers)
    return out.reshape(n, d)


def _patchify(frames: np.ndarray, cfg: PreprocessConfig, layout: str = "hf") -> tuple[np.ndarray, tuple[int, int, int]]:
    """(G*T, H, W, C) (G groups of T frames, any dtype) -> (G*h*w, C*T*P*P) rows and grid (G, h, w);
    channels-last: (G*h*w, T*P*P, C) rows; frames: the frames' bytes, (G*T*H*W*C,) (a view when contiguous)."""
    p, m, tp = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    n, hh, ww, c = frames.shape
    g, gh, gw = n // tp, hh // p, ww // p
    if hh % (p * m) or ww % (p * m):
        raise ValueError(f"frame size {hh}x{ww} is not a multiple of patch*merge = {p * m}")
    if layout == "frames":
        return frames.reshape(-1), (g, gh, gw)
    x = frames.reshape(g, tp, gh // m, m, p, gw // m, m, p, c)
    if layout == "channels_last":  # -> (g, gh/m, gw/m, m, m, T, P, P, C)
        return x.transpose(0, 2, 5, 3, 6, 1, 4, 7, 8).reshape(g * gh * gw, tp * p * p, c), (g, gh, gw)
    # -> (g, gh/m, gw/m, m, m, C, T, P, P): merge blocks contiguous, channel-major inside each patch.
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return x.reshape(g * gh * gw, c * tp * p * p), (g, gh, gw)


def _rows(frames: np.ndarray, cfg: PreprocessConfig, dtype, layout: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Patchify the uint8 frames (a quarter of the bytes of float32), then normalize the rows if float32."""
    if np.dtype(dtype).name not in PIXEL_DTYPES:
        raise ValueError(f"pixel dtype must be one of {PIXEL_DTYPES}, got {dtype!r}")
    if layout not in PIXEL_LAYOUTS:
        raise ValueError(f"pixel layout must be one of {PIXEL_LAYOUTS}, got {layout!r}")
    if layout != "hf" and np.dtype(dtype) != np.uint8:
        raise ValueError(f"the {layout} pixel layout is for raw uint8 pixels (normalized on the device)")
    rows, grid = _patchify(frames, cfg, layout)
    return (rows if np.dtype(dtype) == np.uint8 else normalize_rows(rows, cfg)), grid


def process_images(frames: np.ndarray, cfg: PreprocessConfig, size: tuple[int, int] | None = None, *,
                   dtype=np.float32, layout: str = "hf"):
    """Images (N, H, W, 3) uint8 (same size) -> pixel_values (N*h*w, C*T*P*P) float32, grid_thw (N, 3) int64.

    Each image is its own grid entry (1, h, w); the frame is repeated over the temporal patch.
    `dtype=np.uint8` returns the raw pixels in the same layout (normalized later, e.g. on the device);
    `layout="channels_last"` (uint8 only) returns (N*h*w, T*P*P, C) rows; `layout="frames"` (uint8 only) the
    resized images' bytes, (N*H*W*3,), each image once.
    """
    size = size or image_size(frames.shape[1], frames.shape[2], cfg)
    x = resize_frames(frames, size)
    if layout != "frames":  # frames: each image once, repeated over the temporal patch on the device
        x = np.repeat(x, cfg.temporal_patch_size, axis=0)
    pv, (_, gh, gw) = _rows(x, cfg, dtype, layout)
    return pv, np.tile(np.array([[1, gh, gw]], dtype=np.int64), (len(frames), 1))


def process_video(frames: np.ndarray, cfg: PreprocessConfig, size: tuple[int, int] | None = None, *,
                  dtype=np.float32, layout: str = "hf"):
    """Video frames (T, H, W, 3) uint8 -> pixel_values (t*h*w, C*T*P*P) float32, grid_thw (1, 3) int64.

    Frames are paired along time (temporal patch); an odd count repeats the last frame (as HF does).
    `dtype=np.uint8` returns the raw pixels in the same layout; `layout="channels_last"` (uint8 only) returns
    (t*h*w, T*P*P, C) rows; `layout="frames"` (uint8 only) the resized frames' bytes, (t*T*H*W*3,), a view of
    `frames` when they need neither resizing nor padding.
    """
    size = size or video_size(len(frames), frames.shape[1], frames.shape[2], cfg)
    frames = resize_frames(frames, size)
    if pad := -len(frames) % cfg.temporal_patch_size:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    pv, (g, gh, gw) = _rows(frames, cfg, dtype, layout)
    return pv, np.array([[g, gh, gw]], dtype=np.int64)


def group_timestamps(times: np.ndarray, temporal_patch_size: int = 2) -> np.ndarray:
    """Per temporal group, the mean time of its first and last frame (Qwen3-VL `<t seconds>` text);
    an odd count repeats the last time, as the frames are."""
    times = np.asarray(times, dtype=np.float64)
    if pad := -len(times) % temporal_patch_size:
        times = np.concatenate([times, np.repeat(times[-1:], pad)])
    t = times.reshape(-1, temporal_patch_size)
    return (t[:, 0] + t[:, -1]) / 2
