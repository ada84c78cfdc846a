"""STRIDE's streaming detector: 1-FPS frames -> chunks -> denoised activation windows -> triggers.

Loop (the released STRIDE code's `detect`, host side in `infer.stride_loop`): the cursor advances `chunk_size`
frames per step; the frames in view run from `stack_start` to the cursor, at most `max_window` of them (beyond
that `stack_start` moves by `stride`). Each chunk denoises the slot window ending at its last frame
(`models.stride.sampler.denoise`) and feeds the resulting span to the trigger tracker
(`models.stride.triggers`). This module supplies the model calls (`predict(labels) -> p_active`).

Prefix reuse (`cache`):
  "mega"  — the reference: one prefill over [query, all frames of the mega-window] (times re-based to its
            start); each chunk crops that cache after its last frame group (causal attention: a cropped prefix
            is the shorter video) and every denoising step appends only the 2W slot tokens to it;
  "chunk" — a fresh prefill per chunk over its own frames, shared by the chunk's steps;
  "none"  — every denoising step runs the whole [query, video, slots] sequence (vision tower included).
All three compute the same function; tests check that their outputs agree.

Position ids of the slots: "correct" continues after the cropped prefix (what training saw); "reference"
reproduces the reference eval's cached-rope_deltas ids (see `stride_prompt.slot_positions`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.errors import InputError
from stvl_jax.infer.stride_loop import ChunkRecord, StreamResult, run_stream, stream_chunks, stream_times
from stvl_jax.infer.stride_prompt import StridePrompt, VideoPrefix, slot_positions
from stvl_jax.models.qwen_vl.inputs import ModelInputs
from stvl_jax.models.qwen_vl.text import KVCache
from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs
from stvl_jax.models.stride.head import p_active
from stvl_jax.models.stride.triggers import TriggerTracker
from stvl_jax.nn.bound_jit import bind_jit
from stvl_jax.nn.shapes import bucket


class StreamConfig(StrictConfig):
    """Runtime settings; defaults are the reference's (its ET-Bench evaluation script)."""

    fps: float = pydantic.Field(default=1.0, gt=0)
    chunk_size: int = pydantic.Field(default=32, gt=0)  # new frames per step (even)
    max_window: int = pydantic.Field(default=128, gt=0)  # frames in a mega-window (even)
    stride: int = pydantic.Field(default=32, gt=0)  # frames the mega-window advances (even)
    steps: int = pydantic.Field(default=8, gt=0)  # unmasking steps
    confidence: float | None = pydantic.Field(default=0.75, gt=0.5, le=1.0)  # retain threshold; None: off
    margin: float = pydantic.Field(default=1.0, ge=0)  # a span is complete when it ends this long before now
    multi_event: bool = False
    max_triggers: int = pydantic.Field(default=50, gt=0)
    fallback: bool = True  # no segment at the end -> [0, time of the last decoded frame]
    cache: Literal["mega", "chunk", "none"] = "mega"
    positions: Literal["correct", "reference"] = "correct"
    seed: int = 0  # np.random.RandomState(seed): the reference's np.random draws after np.random.seed(seed)

    @pydantic.model_validator(mode="after")
    def _even(self):
        for name in ("chunk_size", "max_window", "stride"):
            if getattr(self, name) % 2:
                raise ValueError(f"{name} must be even (frames go in pairs), got {getattr(self, name)}")
        if self.chunk_size > self.max_window or self.stride > self.max_window:
            raise ValueError("chunk_size and stride must not exceed max_window")
        return self


__all__ = ["ChunkRecord", "StreamConfig", "StreamResult", "StrideStream", "load_detector"]


# ------------------------------------------------------------------------------------------- jitted pieces
def _prefill(model, inputs: ModelInputs, cache: KVCache) -> KVCache:
    _, _, cache = model.forward(inputs, cache, compute_logits=False)
    return cache


def _cached_probs(model, cache: KVCache, crop, slot_ids, positions, label_ids, window, span):
    """Cut the cache at `crop` (traced), append the slot tokens and read p(active) at the last copy. Attention
    runs over the first `span` cache slots only (static, bucketed >= crop + slots: one program per bucket, and a
    short view of a long mega-window costs what a short prefix would). The prefix stays untouched."""
    valid = cache.valid[:, :span] & (jnp.arange(span) < crop)[None]
    cache = KVCache(cache.k[:, :, :span], cache.v[:, :, :span], valid, crop.astype(jnp.int32))
    inputs = ModelInputs(slot_ids, jnp.ones_like(slot_ids), positions, None)
    _, hidden, _ = model.forward(inputs, cache, return_hidden=True, compute_logits=False)
    return p_active(model.token_logits(hidden[0, -window:], label_ids))


def _full_probs(model, inputs: ModelInputs, label_ids, window):
    _, hidden, _ = model.forward(inputs, return_hidden=True, compute_logits=False)
    valid = inputs.attention_mask[0].astype(bool)
    last = jnp.sum(valid)  # right-padded: real tokens come first
    picked = jax.lax.dynamic_slice_in_dim(hidden[0], last - window, window)
    return p_active(model.token_logits(picked, label_ids))


def _padded(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


class StrideStream:
    """Runs the detector over a clip of frames (offline file or a buffered live stream)."""

    def __init__(self, model, prompt: StridePrompt, cfg: StreamConfig = StreamConfig()):
        self.model = model
        self.prompt = prompt
        self.stride = prompt.stride
        self.cfg = cfg
        # The denoising loop calls these per step: bound once, no per-call NNX graph traversal.
        self._jit_prefill = bind_jit(_prefill, model)
        self._jit_cached_probs = bind_jit(_cached_probs, model, static_argnums=(5, 6, 7))
        self._jit_full_probs = bind_jit(_full_probs, model, static_argnums=(2, 3))

    # ----------------------------------------------------------------------------------- model calls
    def _vision(self, prefix: VideoPrefix):
        return prepare_vision_inputs(self.model.config, pixel_values_videos=prefix.pixel_values,
                                     video_grid_thw=np.asarray([prefix.grid]), buckets=True)

    def _prefill(self, prefix: VideoPrefix) -> KVCache:
        n, w = len(prefix.ids), self.stride.total_slots * self.stride.copies
        length = _padded(n)
        ids = np.zeros((1, length), np.int32)
        ids[0, :n] = prefix.ids
        mask = (np.arange(length) < n).astype(np.int32)[None]
        pos = np.zeros((3, 1, length), np.int32)
        pos[:, 0, :n] = prefix.positions
        inputs = ModelInputs(ids, mask, pos, self._vision(prefix))
        cache = KVCache.init(self.model.config.text, 1, _padded(length + w), self.model.dtype)
        return self._jit_prefill(jax.tree.map(jnp.asarray, inputs), cache)

    def _predict_cached(self, cache, crop: int, pos_fn) -> Callable[[np.ndarray], np.ndarray]:
        w = self.stride.total_slots

        span = min(bucket(crop + self.stride.copies * w, minimum=64), cache.capacity)

        def predict(labels):
            ids = self.prompt.slot_ids(labels)[None]
            return np.asarray(self._jit_cached_probs(cache, jnp.int32(crop), jnp.asarray(ids),
                                                     jnp.asarray(pos_fn(ids.shape[1])[:, None]),
                                                     self.stride.label_token_ids, w, span))
        return predict

    def _predict_full(self, prefix: VideoPrefix, pos_fn) -> Callable[[np.ndarray], np.ndarray]:
        w = self.stride.total_slots
        vision = self._vision(prefix)
        n = len(prefix.ids)

        def predict(labels):
            slots = self.prompt.slot_ids(labels)
            total = n + len(slots)
            length = bucket(total, minimum=64)
            ids = np.zeros((1, length), np.int32)
            ids[0, :total] = np.concatenate([prefix.ids, slots])
            pos = np.zeros((3, 1, length), np.int32)
            pos[:, 0, :n] = prefix.positions
            pos[:, 0, n:total] = pos_fn(len(slots))
            mask = (np.arange(length) < total).astype(np.int32)[None]
            inputs = ModelInputs(ids, mask, pos, vision)
            return np.asarray(self._jit_full_probs(jax.tree.map(jnp.asarray, inputs),
                                                   self.stride.label_token_ids, w))
        return predict

    def _mega_prefix(self, query: str, frames: np.ndarray, start: int, end: int):
        """-> (prefix over frames[start:end], its prefilled cache if cache == "mega")."""
        times = self._times[start:end] - self._times[start]  # re-based to the mega-window's first frame
        prefix = self.prompt.prefix(query, frames[start:end], times)
        return prefix, (self._prefill(prefix) if self.cfg.cache == "mega" else None)

    def _chunk_predictor(self, prefix: VideoPrefix, cache, groups: int):
        """-> (predict(labels) -> p_active for the view of the first `groups` frame groups, prefill ran?)."""
        view = prefix.view(groups)
        crop, mega_delta, mode = len(view.ids), prefix.rope_delta(), self.cfg.positions

        def pos_fn(n):
            return slot_positions(view, crop, n, mode, mega_delta)

        if self.cfg.cache == "mega":
            return self._predict_cached(cache, crop, pos_fn), False
        if self.cfg.cache == "chunk":
            return self._predict_cached(self._prefill(view), crop, pos_fn), True
        return self._predict_full(view, pos_fn), False

    # ----------------------------------------------------------------------------------- the loop
    def new_tracker(self) -> TriggerTracker:
        c = self.cfg
        return TriggerTracker(c.margin, c.multi_event, c.max_triggers, c.fallback)

    def _prepare(self, frames, times) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
        if len(frames) < 2:
            raise InputError(f"the stream needs at least 2 frames, got {len(frames)}")
        times = stream_times(len(frames), self.cfg.fps, times)
        if times.shape != (len(frames),) or not np.isfinite(times).all() or (np.diff(times) < 0).any():
            raise InputError(f"times must be {len(frames)} finite non-decreasing seconds, got shape {times.shape}")
        self._times = times
        return frames, times

    def _loop_args(self) -> dict:
        sc = self.stride
        return {"window": sc.window, "future": sc.future, "resolution": sc.resolution}

    def chunks(self, frames: np.ndarray, query: str, tracker: TriggerTracker, times=None) -> Iterator[ChunkRecord]:
        """Yield each chunk's record as it is decided (`infer.stride_loop.stream_chunks`); frames (T, H, W, 3)
        uint8, times (T,) their stream times in seconds (None: index / cfg.fps; the reference uses the decoded
        timestamps). Stops after the tracker's last allowed trigger; finalizes the open segment at the end."""
        frames, times = self._prepare(frames, times)
        yield from stream_chunks(times, self._open_view(frames, query), self.cfg, tracker, **self._loop_args())

    def run(self, frames: np.ndarray, query: str, on_chunk: Callable[[ChunkRecord], None] | None = None,
            times=None) -> StreamResult:
        """The whole stream (`infer.stride_loop.run_stream`): chunk records, each passed to `on_chunk` as it is
        decided; with `fallback`, [0, last frame time] when nothing completed. Segments are clipped at 0."""
        frames, times = self._prepare(frames, times)
        return run_stream(times, self._open_view(frames, query), self.cfg, self.new_tracker(),
                          on_chunk=on_chunk, **self._loop_args())

    def _open_view(self, frames: np.ndarray, query: str):
        """-> open_view(stack_start, mega_end, n): the predictor over frames [stack_start, stack_start + n);
        the mega-window prefix over [stack_start, mega_end) is built whenever stack_start changes."""
        mega = [None]  # (stack_start, prefix, cache)

        def open_view(start: int, end: int, n: int):
            built = False
            if mega[0] is None or mega[0][0] != start:
                mega[0] = (start, *self._mega_prefix(query, frames, start, end))
                built = self.cfg.cache == "mega"
            predict, chunk_built = self._chunk_predictor(mega[0][1], mega[0][2], n // 2)
            return predict, built or chunk_built
        return open_view


def load_detector(ckpt: str, tokenizer, cfg: StreamConfig, *, window: int | None = None,
                  resolution: float | None = None, max_pixels: int | None = None) -> StrideStream:
    """A detector for a STRIDE checkpoint: window settings from the flags, else recorded with the checkpoint
    (`models.stride.config.recorded_settings`); frames prepared with the checkpoint's preprocessing
    (`model.preprocessing`), `max_pixels` overriding its per-frame video bound."""
    from stvl_jax.models.stride.model import load_stride

    model, stride = load_stride(ckpt, tokenizer, window=window, resolution=resolution)
    vision = model.preprocessing
    if max_pixels is not None:
        vision = vision.updated({"video": {"max_pixels": max_pixels, "budget": "frame"}})
    return StrideStream(model, StridePrompt(tokenizer, model.config, vision, stride), cfg)
