"""Qwen-VL visual preprocessing on numpy: `smart_resize`, PIL-bicubic resize, rescale/normalize and patchify.

Output layout equals transformers' Qwen-VL processors:
- images: each image -> rows of `C*T*P*P` (T = temporal_patch_size, the frame repeated), grid (1, h, w);
- videos: frames grouped in temporal pairs -> grid (t, h, w) with t = ceil(frames / 2) (last frame repeated);
- every row is one P x P patch flattened channel-major (C, T, P, P); rows are ordered merge block by merge
  block (2 x 2 patches of one LLM token are consecutive), blocks in raster order, temporal groups outermost.
Arithmetic follows the HF PIL backend exactly (uint8 bicubic resize in PIL, `x.astype(float64) * (1/255)` cast
to float32, then `(x - mean) / std` in float32) so results are bit-identical. Patchifying happens on the uint8
frames; `dtype=np.uint8` stops there (raw pixels in the same row layout, for normalization on the device:
the model's vision tower does it when it receives integer pixel values). `layout="channels_last"` (uint8 only)
gives each patch as a (T*P*P, C) block instead — rows (N, T*P*P, C), the same rows in the same order — which
the host transposes ~3x faster (channel stays innermost, as decoded); the vision tower permutes such rows to
the HF layout on the device. `layout="frames"` (uint8 only) does not patchify at all: the resized frames
themselves, flattened to bytes (an image once, a video's frames padded to whole temporal patches); the model
gathers the patch rows on the device (`vision_inputs.frame_offsets`). For an unresized video that is a view
of the decoded frames, so the host never touches the pixels before batching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionConfig:
    """Processor settings. Presets: `VisionConfig.qwen3_vl()`, `VisionConfig.qwen2_5_vl()`.

    min_pixels/max_pixels bound H*W of each resized frame; `max_tokens_per_frame` (merged LLM tokens per frame,
    STRIDE's frame_max_tokens) tightens max_pixels to max_tokens * (patch*merge)^2.
    """

    family: str = "qwen3_vl"
    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = HALF
    image_std: tuple[float, float, float] = HALF
    min_pixels: int = 32 * 32
    max_pixels: int = 256 * 32 * 32
    max_tokens_per_frame: int | None = None
    tokens_per_second: int = 2  # Qwen2.5-VL temporal position scale

    def __post_init__(self):
        if self.family not in ("qwen3_vl", "qwen2_5_vl"):
            raise ValueError(f"family must be 'qwen3_vl' or 'qwen2_5_vl', got {self.family!r}")
        for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def effective_max_pixels(self) -> int:
        if self.max_tokens_per_frame is None:
            return self.max_pixels
        return min(self.max_pixels, self.max_tokens_per_frame * self.factor**2)

    @classmethod
    def qwen3_vl(cls, **kw) -> "VisionConfig":
        return cls(**{"family": "qwen3_vl", "patch_size": 16, "image_mean": HALF, "image_std": HALF, **kw})

    @classmethod
    def qwen2_5_vl(cls, **kw) -> "VisionConfig":
        base = {"family": "qwen2_5_vl", "patch_size": 14, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}
        return cls(**{**base, **kw})


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


def target_size(height: int, width: int, cfg: VisionConfig) -> tuple[int, int]:
    return smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.effective_max_pixels)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8 with PIL bicubic (no-op when the size already matches)."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), resample=Image.BICUBIC)) for f in frames])


def _lut(cfg: VisionConfig) -> np.ndarray:
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


def row_shape(cfg: VisionConfig, layout: str = "hf") -> tuple[int, ...]:
    """Shape of one patch row: (C*T*P*P,) in the HF layout, (T*P*P, C) channels-last; frames are flat bytes, ()."""
    tpp = cfg.temporal_patch_size * cfg.patch_size**2
    return {"hf": (3 * tpp,), "channels_last": (tpp, 3), "frames": ()}[layout]


def normalize_rows(rows: np.ndarray, cfg: VisionConfig) -> np.ndarray:
    """uint8 patch rows (N, C*T*P*P) -> float32 rows, rescaled and normalized like the HF PIL backend
    (`x.astype(float64) * (1/255)` -> float32, `(x - mean) / std`) via a per-channel lookup table, so the
    result is bit-identical to HF's. Element j of a row is channel j // (T*P*P)."""
    n, d = rows.shape
    lut, r = _lut(cfg), rows.reshape(n, 3, d // 3)
    out = np.empty(r.shape, np.float32)
    for c in range(3):
        out[:, c] = lut[c][r[:, c]]  # (fancy indexing beats np.take(out=) here, which buffers)
    return out.reshape(n, d)


def _patchify(frames: np.ndarray, cfg: VisionConfig, layout: str = "hf") -> tuple[np.ndarray, tuple[int, int, int]]:
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


def _rows(frames: np.ndarray, cfg: VisionConfig, dtype, layout: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Patchify the uint8 frames (a quarter of the bytes of float32), then normalize the rows if float32."""
    if np.dtype(dtype).name not in PIXEL_DTYPES:
        raise ValueError(f"pixel dtype must be one of {PIXEL_DTYPES}, got {dtype!r}")
    if layout not in PIXEL_LAYOUTS:
        raise ValueError(f"pixel layout must be one of {PIXEL_LAYOUTS}, got {layout!r}")
    if layout != "hf" and np.dtype(dtype) != np.uint8:
        raise ValueError(f"the {layout} pixel layout is for raw uint8 pixels (normalized on the device)")
    rows, grid = _patchify(frames, cfg, layout)
    return (rows if np.dtype(dtype) == np.uint8 else normalize_rows(rows, cfg)), grid


def process_images(frames: np.ndarray, cfg: VisionConfig, size: tuple[int, int] | None = None, *,
                   dtype=np.float32, layout: str = "hf"):
    """Images (N, H, W, 3) uint8 (same size) -> pixel_values (N*h*w, C*T*P*P) float32, grid_thw (N, 3) int64.

    Each image is its own grid entry (1, h, w); the frame is repeated over the temporal patch.
    `dtype=np.uint8` returns the raw pixels in the same layout (normalized later, e.g. on the device);
    `layout="channels_last"` (uint8 only) returns (N*h*w, T*P*P, C) rows; `layout="frames"` (uint8 only) the
    resized images' bytes, (N*H*W*3,), each image once.
    """
    size = size or target_size(frames.shape[1], frames.shape[2], cfg)
    x = resize_frames(frames, size)
    if layout != "frames":  # frames: each image once, repeated over the temporal patch on the device
        x = np.repeat(x, cfg.temporal_patch_size, axis=0)
    pv, (_, gh, gw) = _rows(x, cfg, dtype, layout)
    return pv, np.tile(np.array([[1, gh, gw]], dtype=np.int64), (len(frames), 1))


def process_video(frames: np.ndarray, cfg: VisionConfig, size: tuple[int, int] | None = None, *,
                  dtype=np.float32, layout: str = "hf"):
    """Video frames (T, H, W, 3) uint8 -> pixel_values (t*h*w, C*T*P*P) float32, grid_thw (1, 3) int64.

    Frames are paired along time (temporal patch); an odd count repeats the last frame (as HF does).
    `dtype=np.uint8` returns the raw pixels in the same layout; `layout="channels_last"` (uint8 only) returns
    (t*h*w, T*P*P, C) rows; `layout="frames"` (uint8 only) the resized frames' bytes, (t*T*H*W*3,), a view of
    `frames` when they need neither resizing nor padding.
    """
    size = size or target_size(frames.shape[1], frames.shape[2], cfg)
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


def tokens_per_grid(grid_thw, merge_size: int) -> int:
    """Number of LLM placeholder tokens for one grid entry (t*h*w / merge^2)."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // (merge_size * merge_size)
