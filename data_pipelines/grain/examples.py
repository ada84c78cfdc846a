"""Record -> training example (the per-sample part of the transform chain, run in Grain workers).

decode (decord) -> resize (smart_resize, PIL bicubic) -> patchify -> chat text with vision placeholders
(compact: one pad token per block, expanded by `text.encode`; Qwen3-VL `<t seconds>` per frame group;
Streamo frames as separate images behind `<Xs-Ys>` tags; STRIDE activation slots; a Strefer clip as a chat of its
text pairs) -> tokenize -> labels / loss weights -> 3-D position ids (the model's rules:
`stvl_jax.models.qwen_vl.host.positions`). Pixel
rows are float32 (HF-normalized) or, with `PipelineConfig.pixel_dtype="uint8"`, raw uint8 in the same layout
or (`pixel_layout="channels_last"`) as (T*P*P, C) blocks.

An example is a dict of unbatched numpy arrays; a bad record becomes {"__skip__": reason, ...} so the main
process can count it (or raise it in strict mode).
"""

from __future__ import annotations

import math
import os

import numpy as np

from data_pipelines.errors import AnnotationError, VideoDecodeError, skip_reason
from data_pipelines.formats import stride as stride_fmt
from data_pipelines.formats.stream_record import ROLES, stream_record_parts, stream_turn_indices
from data_pipelines.grain.config import PipelineConfig
from data_pipelines.grain.sources import parse_record
from data_pipelines.grain.text import (
    SpecialIds, encode, image_placeholder, render_chat, token_types, video_placeholder,
)
from data_pipelines.strefer.training import training_record
from data_pipelines.tokenizer import open_tokenizer
from data_pipelines.video import VideoInfo, check_clip_in_video, decode_clip, sample_indices
from stvl_jax.models.qwen_vl.host.placeholders import vision_pad_counts
from stvl_jax.models.qwen_vl.host.positions import example_positions
from stvl_jax.models.qwen_vl.host.preprocess import image_size, process_images, process_video, row_shape


class ExampleBuilder:
    """Callable (item, rng) -> example | skip marker (rng: Grain's per-record generator).

    Picklable; loads the tokenizer lazily per process."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.media_root = cfg.media_root or os.path.dirname(os.path.abspath(cfg.index))
        self._tok = None
        self._ids = None

    def __getstate__(self):
        return {**self.__dict__, "_tok": None, "_ids": None}

    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = open_tokenizer(self.cfg.tokenizer, "data.pipeline.tokenizer")
            self._ids = SpecialIds.from_tokenizer(self._tok)
        return self._tok

    @property
    def ids(self) -> SpecialIds:
        self.tokenizer
        return self._ids

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        try:
            rec = parse_record(item)
            build = {"chat": self._chat, "streamo": self._streamo, "stride": self._stride,
                     "strefer": self._strefer}[self.cfg.format]
            return build(rec, item["key"], rng)
        except VideoDecodeError as e:
            return {"__skip__": skip_reason(e), "kind": "video", "path": e.path, "message": e.reason,
                    "source": item["key"]}
        except AnnotationError as e:
            return {"__skip__": e.reason, "kind": "annotation", "message": str(e), "source": item["key"]}

    # ---- helpers -------------------------------------------------------------------------------------------

    def _path(self, p, source: str) -> str:
        if not isinstance(p, str) or not p:
            raise AnnotationError("missing_field", "media part has no 'path'", source)
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(self.media_root, p))

    def _video(self, part: dict, source: str, fps: float | None = None, start=None, end=None, even_linspace=False):
        """Decode one video part -> (pixel_values, grid (1,3), frame times (T,) seconds, n_frames)."""
        path = self._path(part.get("path") or part.get("video"), source)
        for name, t in (("start", start), ("end", end)):
            if t is not None:
                if not isinstance(t, (int, float)) or math.isnan(t):
                    code = "nan_time" if isinstance(t, float) else "bad_time"
                    raise AnnotationError(code, f"video {name} {t!r}", source)
                if t < 0:
                    raise AnnotationError("negative_time", f"video {name} {t} < 0", source)
        cfg = self.cfg
        sampling = cfg.preprocess.frames  # the model's frame sampling (fps, max_frames)

        def select(info: VideoInfo) -> np.ndarray:  # runs once the decoder has the file open
            check_clip_in_video(info, start, end, source)
            if even_linspace:  # STRIDE: an even number of frames spread over the clip at <= fps
                dur = (info.duration if end is None else end) - (start or 0.0)
                n = stride_fmt.clip_frame_count(dur, fps or 1.0, sampling.max_frames)
                return sample_indices(info, start=start, end=end, num_frames=n)
            return sample_indices(info, fps=fps or sampling.fps, start=start, end=end,
                                  max_frames=sampling.max_frames)

        clip = decode_clip(path, select, num_threads=cfg.decode_threads, timeout_s=cfg.decode_timeout_s, copy=False)
        frames = np.zeros_like(clip.frames) if cfg.zero_pixels else clip.frames  # the black-frame control
        pv, grid = process_video(frames, cfg.preprocess, dtype=cfg.pixel_dtype, layout=cfg.pixel_layout)
        sec_per_grid = cfg.preprocess.temporal_patch_size / (fps or sampling.fps)
        return pv, grid, clip.times, len(clip.frames), sec_per_grid

    def _image(self, part: dict, source: str):
        path = self._path(part.get("path") or part.get("image"), source)
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise VideoDecodeError(path, "file not found") from None
        except Exception as e:  # PIL.UnidentifiedImageError, truncated files
            raise VideoDecodeError(path, f"not a readable image ({type(e).__name__})") from None
        return process_images(arr[None], self.cfg.preprocess, dtype=self.cfg.pixel_dtype, layout=self.cfg.pixel_layout)

    def _finish(self, messages, source, *, images=(), videos=(), sec_per_grid=(), n_frames=0,
                activation=None) -> dict:
        """Render, tokenize, labels, positions -> example."""
        cfg, ids = self.cfg, self.ids
        vc = cfg.preprocess
        row, dtype = row_shape(vc, cfg.pixel_layout), np.dtype(cfg.pixel_dtype)
        ex = {"num_frames": np.int64(n_frames)}
        for key, parts, shape, typ in (("pixel_values", [p for p, _ in images], (0, *row), dtype),
                                       ("image_grid_thw", [g for _, g in images], (0, 3), np.int64),
                                       ("pixel_values_videos", [p for p, _ in videos], (0, *row), dtype),
                                       ("video_grid_thw", [g for _, g in videos], (0, 3), np.int64)):
            ex[key] = (parts[0] if len(parts) == 1 else np.concatenate(parts)) if parts else np.zeros(shape, typ)
        if vc.family == "qwen2_5_vl":
            ex["second_per_grid_ts"] = np.asarray(sec_per_grid, dtype=np.float32).reshape(-1)
        text, spans = render_chat(messages)
        n_img, n_vid = vision_pad_counts(ex["image_grid_thw"], ex["video_grid_thw"], vc.merge_size, vc.family)
        try:
            input_ids, labels = encode(self.tokenizer, text, spans, {ids.image_pad: n_img, ids.video_pad: n_vid})
        except ValueError as e:  # the record's own text holds vision pad tokens
            raise AnnotationError("bad_field", str(e), source) from None
        if len(input_ids) > cfg.length_buckets[-1]:
            raise AnnotationError("too_long", f"{len(input_ids)} tokens > largest bucket {cfg.length_buckets[-1]}",
                                  source)
        types = token_types(input_ids, ids)
        ex.update(input_ids=input_ids, labels=labels, mm_token_type_ids=types,
                  loss_weights=(labels != -100).astype(np.float32))
        ex["position_ids"] = example_positions(
            types, ex["image_grid_thw"], ex["video_grid_thw"], ex.get("second_per_grid_ts"), family=vc.family,
            merge=vc.merge_size, positions=cfg.positions)
        if activation is not None:
            ex["activation_labels"] = self._activation_labels(input_ids, activation)
            ex["loss_weights"] = (ex["activation_labels"] != -100).astype(np.float32)
        return ex

    def _activation_labels(self, input_ids, window) -> np.ndarray:
        """-100 everywhere except masked slots of the last copy: GT 0/1 at the <activation> token itself."""
        pos = np.flatnonzero(input_ids == self.ids.activation)
        n_masked = int(window.mask.sum())
        copies = 1 if self.cfg.stride.single_sequence else 2
        if len(pos) != copies * n_masked:
            raise AnnotationError("bad_window", f"{len(pos)} <activation> tokens, expected {copies * n_masked}")
        out = np.full(len(input_ids), -100, dtype=np.int32)
        out[pos[len(pos) - n_masked:]] = window.gt[window.mask]
        return out

    # ---- formats -------------------------------------------------------------------------------------------

    def _chat(self, rec, source, rng):
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise AnnotationError("missing_field", "record has no 'messages' list", source)
        out, images, videos, secs, n_frames = [], [], [], [], 0
        fam = self.cfg.preprocess.family
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
                raise AnnotationError("bad_field", f"bad message {str(m)[:80]!r}", source)
            content = m["content"]
            if isinstance(content, str):
                out.append({"role": m["role"], "content": content})
                continue
            if not isinstance(content, list):
                raise AnnotationError("bad_field", "message content must be a string or a list of parts", source)
            pieces = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif kind == "image":
                    pv, grid = self._image(part, source)
                    images.append((pv, grid))
                    pieces.append(image_placeholder())
                elif kind == "video":
                    fps = part.get("fps")
                    pv, grid, times, n, spg = self._video(part, source, fps=fps, start=part.get("start"),
                                                          end=part.get("end"))
                    videos.append((pv, grid))
                    secs.append(spg)
                    n_frames += n
                    if part.get("relative_times"):  # the clip is the whole video: its stamps start at 0
                        times = times - float(part.get("start") or 0.0)
                    pieces.append(video_placeholder(grid[0], fam, times, self.cfg.preprocess.temporal_patch_size))
                else:
                    raise AnnotationError("bad_field", f"unknown content part {str(part)[:80]!r}", source)
            out.append({"role": m["role"], "content": "".join(pieces)})
        if not any(m["role"] == "assistant" for m in out):
            raise AnnotationError("missing_field", "chat record has no assistant turn to learn from", source)
        return self._finish(out, source, images=images, videos=videos, sec_per_grid=secs, n_frames=n_frames)

    def _streamo(self, rec, source, rng):
        video, msgs, n_stream = stream_record_parts(rec, source)
        path = self._path(video, source)

        def select(info: VideoInfo) -> np.ndarray:  # one frame per turn
            return stream_turn_indices(n_stream, info.num_frames, info.fps, self.cfg.streamo_fps, source)

        frames = decode_clip(path, select, num_threads=self.cfg.decode_threads, timeout_s=self.cfg.decode_timeout_s,
                             copy=False).frames
        size = image_size(frames.shape[1], frames.shape[2], self.cfg.preprocess)
        pv, grids = process_images(frames, self.cfg.preprocess, size, dtype=self.cfg.pixel_dtype,
                                    layout=self.cfg.pixel_layout)
        out = [{"role": m["role"], "content": m["content"].replace("<stream>", image_placeholder())} for m in msgs]
        ex = self._finish(out, source, images=[(pv, grids)], n_frames=n_stream)
        if self.cfg.streamo_state_noise > 0:
            self._noise_states(ex, rng)
        return ex

    def _noise_states(self, ex: dict, rng: np.random.Generator) -> None:
        """Replace context state tokens (`streamo_state_noise`); labels align with input_ids (HF shift), so a
        token's own label, predicted from the positions before it, stays the true state. Only turns that are a
        state alone: an answer's text is not left behind a state that says there is none."""
        ids = ex["input_ids"]
        states = np.asarray(self.ids.states, dtype=ids.dtype)
        alone = np.append(ids[1:] == self.ids.im_end, False)
        noise = rng.random(len(ids)) < self.cfg.streamo_state_noise
        at = np.flatnonzero(np.isin(ex["labels"], states) & alone & noise)
        cur = (ids[at, None] == states[None]).argmax(1)  # which state each chosen token is
        ex["input_ids"] = ids = ids.copy()
        ids[at] = states[(cur + rng.integers(1, len(states), len(at))) % len(states)]  # another one

    def _stride(self, rec, source, rng):
        query, vpart, entries = stride_fmt.parse_sample(rec, source)
        start, end = float(vpart["start_seconds"]), float(vpart["end_seconds"])
        pv, grid, times, n, spg = self._video(vpart, source, fps=self.cfg.stride_fps, start=start, end=end,
                                              even_linspace=True)
        t0 = float(times[0])
        rel = times - t0  # re-base the clip to t=0 (STRIDE's time_synchronize)
        entries = [stride_fmt.ActivationEntry(e.start - t0, e.end - t0, e.value, e.mask) for e in entries]
        window = stride_fmt.build_window(entries, float(rel[-1]), self.cfg.stride, rng, source)
        vtext = video_placeholder(grid[0], self.cfg.preprocess.family, rel, self.cfg.preprocess.temporal_patch_size)
        content = query + vtext + stride_fmt.activation_text(window, self.cfg.stride)
        return self._finish([{"role": "user", "content": content}], source, videos=[(pv, grid)],
                            sec_per_grid=[spg], n_frames=n, activation=window)

    def _strefer(self, rec, source, rng):
        """A Strefer engine example -> one chat over its clip and text pairs (`strefer.training_record`)."""
        return self._chat(training_record(rec, self.cfg.strefer, rng, source), source, rng)
