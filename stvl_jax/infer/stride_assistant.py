"""The proactive assistant: STRIDE decides when, a frozen downstream Qwen-VL says what.

On each trigger the frames accumulated so far (at the stream's fps, subsampled evenly to at most
`max_frames`) and the user's query go to the downstream model — any Qwen3-VL / Qwen2.5-VL checkpoint that
`stvl convert import` produced, loaded with `stvl_jax.load_model` — which answers greedily.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import stvl_jax
from data_pipelines.grain.text import VIDEO_PAD, encode, render_chat, video_placeholder
from stvl_jax.models.qwen_vl.host.placeholders import video_block_tokens
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig, process_video
from stvl_jax.infer.stride_loop import stream_times
from stvl_jax.infer.stride_runtime import ChunkRecord, StreamResult, StrideStream
from stvl_jax.models.stride.triggers import Segment


@dataclass(frozen=True)
class Answer:
    time: float  # stream time of the trigger (s)
    segment: tuple[float, float]
    text: str
    frames: int  # frames the downstream model saw
    latency_s: float


class Answerer:
    """Downstream video LLM: (frames, times, question) -> text."""

    def __init__(self, model, tokenizer, vision: PreprocessConfig | None = None, *, max_frames: int = 16,
                 max_new_tokens: int = 48):
        """vision: the answerer's preprocessing (None: the model's own, `model.preprocessing`)."""
        self.model, self.tokenizer = model, tokenizer
        self.vision = vision or model.preprocessing
        self.max_frames = max_frames - max_frames % 2
        self.max_new_tokens = max_new_tokens

    def answer(self, frames: np.ndarray, times: np.ndarray, question: str) -> tuple[str, int]:
        """-> (answer text, number of frames shown)."""
        n = len(frames) - len(frames) % 2
        if n > self.max_frames:
            idx = np.linspace(0, n - 1, self.max_frames).round().astype(int)
        else:
            idx = np.arange(max(n, min(len(frames), 2)))
        frames, times = frames[idx], np.asarray(times, np.float64)[idx]
        fam = self.model.config.family
        pv, grid = process_video(frames, self.vision)
        text, _ = render_chat([{"role": "user", "content": video_placeholder(grid[0], fam, times,
                                                                             self.vision.temporal_patch_size)
                                + question}], add_generation_prompt=True)
        pad = self.tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        ids, _ = encode(self.tokenizer, text, [], {pad: video_block_tokens(grid[0], self.vision.merge_size, fam)})
        batch = {"input_ids": ids[None].astype(np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                 "pixel_values_videos": pv, "video_grid_thw": grid}
        if fam == "qwen2_5_vl":
            step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
            batch["second_per_grid_ts"] = np.asarray([self.vision.temporal_patch_size * step], np.float32)
        out = stvl_jax.generate(self.model, batch, max_new_tokens=self.max_new_tokens)[0]
        eos = set(self.model.config.eos_token_id)
        keep = []
        for tok in out.tolist():
            if tok in eos:
                break
            keep.append(tok)
        return self.tokenizer.decode(keep, skip_special_tokens=True).strip(), len(frames)


class ProactiveAssistant:
    """`run(frames, query, times=...)` -> (StreamResult, [Answer]): the detector's stream, answering at each
    trigger (no answers without an answerer)."""

    def __init__(self, detector: StrideStream, answerer: Answerer | None):
        self.detector, self.answerer = detector, answerer

    def answer(self, frames: np.ndarray, times: np.ndarray, t_last: float, seg: Segment, query: str) -> Answer:
        """The downstream answer for a trigger at `t_last` from the frames seen so far: those whose stream time
        (`times`, (T,) s) is at most `t_last`, shown with their times."""
        upto = int(np.searchsorted(times, t_last, side="right"))
        t0 = time.perf_counter()
        text, shown = self.answerer.answer(frames[:upto], times[:upto], query)
        return Answer(t_last, (seg.start, seg.end), text, shown, time.perf_counter() - t0)

    def run(self, frames: np.ndarray, query: str, on_event: Callable[[ChunkRecord | Answer], None] | None = None,
            times=None) -> tuple[StreamResult, list[Answer]]:
        """frames (T, H, W, 3) uint8; times (T,) their stream times in seconds (the decoded timestamps,
        `data_pipelines.video.read_stream`; None: index / the detector's fps), for the detector and the answerer."""
        answers: list[Answer] = []
        times = stream_times(len(frames), self.detector.cfg.fps, times)

        def on_chunk(rec: ChunkRecord) -> None:
            if on_event is not None:
                on_event(rec)
            for seg in rec.triggers if self.answerer is not None else ():  # no answerer: triggers only
                answers.append(self.answer(frames, times, rec.t_last, seg, query))
                if on_event is not None:
                    on_event(answers[-1])

        return self.detector.run(frames, query, on_chunk, times=times), answers
