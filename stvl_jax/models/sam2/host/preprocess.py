"""SAM2's frame preprocessing on the host (numpy only): the checkpoint's `Sam2PreprocessConfig`, the uint8
antialiased bilinear resize to `image_size` x `image_size`, and the fused rescale + normalize.

Bit-identical to transformers' `Sam2VideoVideoProcessor` / `Sam2ImageProcessor` (torchvision backend), which
resize the decoded uint8 frames with `torchvision.transforms.v2.functional.resize(..., BILINEAR, antialias=True)`,
i.e. torch's uint8 antialiased kernel: per-axis triangle weights (support scaled by the downscale factor) turned
into int16 fixed point at the largest precision that keeps the biggest weight below 2**15, the horizontal pass
first, each pass rounded and clipped to uint8. Then `(x - 255 * mean) / (255 * std)` in float32. PIL's own
bilinear resize differs from it by one level on strong downscales (22 fixed-point bits instead of <= 22 chosen per
axis), so it is not used. Meta's `sam2` predictor resizes with PIL's default (bicubic) instead: a checkpoint that
needs that names `resample: pil_bicubic`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

from stvl_jax.config_base import StrictConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Sam2PreprocessConfig(StrictConfig):
    """What a SAM2 checkpoint's frames go through before the image encoder (stvl_config.json "preprocessing")."""
    image_size: int = 1024
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: Literal["bilinear_antialias", "pil_bicubic"] = "bilinear_antialias"
    mask_threshold: float = 0.0  # logits above it are foreground (postprocessing)


@lru_cache(maxsize=32)
def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Source indices (n_out, K), int16-range fixed-point weights (n_out, K) and their precision in bits."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0  # bilinear: half-width 1, stretched when downscaling
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(n_out) + 0.5)
    lo = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    k = int((hi - lo).max())
    idx = lo[:, None] + np.arange(k)[None, :]
    valid = idx < hi[:, None]
    w = np.where(valid, np.maximum(0.0, 1.0 - np.abs((idx - centers[:, None] + 0.5) * inv)), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1.0), w)
    precision = 0
    while precision < 22 and int(0.5 + w.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    v = w * (1 << precision)
    w_int = np.trunc(np.where(v < 0, v - 0.5, v + 0.5)).astype(np.int32)
    return np.minimum(idx, n_in - 1), w_int, precision


def _resize_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    if x.shape[axis] == n_out:
        return x
    idx, w, precision = _axis_weights(x.shape[axis], n_out)
    x32 = x.astype(np.int32)  # sum of weights <= 2**22, so 255 * 2**22 + rounding fits
    bshape = [1] * x.ndim
    bshape[axis] = n_out
    acc = np.full(x.shape[:axis] + (n_out,) + x.shape[axis + 1:], 1 << (precision - 1), np.int32)
    for j in range(idx.shape[1]):
        acc += np.take(x32, idx[:, j], axis=axis) * w[:, j].reshape(bshape)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def resize_bilinear_antialias(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., H, W, C) uint8 -> (..., height, width, C) uint8, torch's uint8 antialiased bilinear (see module)."""
    if frames.dtype != np.uint8:
        raise TypeError(f"resize_bilinear_antialias expects uint8 frames, got {frames.dtype}")
    return _resize_axis(_resize_axis(frames, frames.ndim - 2, width), frames.ndim - 3, height)


def _resize_pil_bicubic(frames: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    flat = frames.reshape((-1,) + frames.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(f).resize((size, size))) for f in flat])
    return out.reshape(frames.shape[:-3] + out.shape[1:])


def preprocess_frames(frames: np.ndarray, cfg: Sam2PreprocessConfig) -> np.ndarray:
    """Decoded RGB frames (T, H, W, 3) uint8 -> pixel values (T, 3, S, S) float32, S = cfg.image_size."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected RGB frames (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    s = cfg.image_size
    mean = np.asarray(cfg.mean, np.float32)[:, None, None]
    std = np.asarray(cfg.std, np.float32)[:, None, None]
    if cfg.resample == "pil_bicubic":  # Meta's predictor: u8 / 255 in float64, then float32 (x - mean) / std
        x = (_resize_pil_bicubic(frames, s) / 255.0).astype(np.float32).transpose(0, 3, 1, 2)
        return (x - mean) / std
    # transformers: mean and std scaled by 255 in float32, one (x - mean) / std on the uint8 values
    x = resize_bilinear_antialias(frames, s, s).astype(np.float32).transpose(0, 3, 1, 2)
    return (x - mean * np.float32(255.0)) / (std * np.float32(255.0))
