"""STRIDE evaluation: stream each (video, query) sample through the detector, format its segments as the
ET-Bench answer, and score with `etbench.score`; the synthetic set's activation task goes the same way.

Synthetic activation task (`synthetic_samples`): one `tvg` sample per distinct (video, entity, event) of a
held-out split's STRIDE samples — the whole video is streamed at 1 FPS with the query, the target is the event
[start, end] in seconds. Baselines run the same loop with a constant detector: always-on (every seen slot
active) and always-off (nothing; with the reference's fallback its answer is [0, t_last]); the oracle runs it
with the ground truth as its slot labels (the ceiling).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from data_pipelines.errors import AnnotationError
from data_pipelines.formats import stride as stride_fmt
from data_pipelines.video import VideoClip, check_clip_in_video, read_stream
from stvl_jax.errors import InputError
from stvl_jax.eval import etbench
from stvl_jax.eval.skips import SkipReport, read_jsonl
from stvl_jax.infer.stride_loop import FRAMES_PER_GROUP, slot_grid
from stvl_jax.infer.stride_runtime import StreamConfig, StreamResult, StrideStream


def synthetic_samples(data_dir: str, split: str = "test", skips: SkipReport | None = None) -> list[dict]:
    """ET-Bench-format tvg samples from `stvl data synth`'s stride/<split>.jsonl (one per distinct query).

    A line training refuses (`formats.stride.parse_sample`), one without the fields of a query (vid, entity,
    action) or an `<active>` entry to find, or whose video has no annotation is counted in `skips` (named
    "path:line"); `skips=None` raises it. Each sample keeps its line's clip (`clip`): the video must cover it,
    as in training (checked when the video is decoded)."""
    path = os.path.join(data_dir, "stride", f"{split}.jsonl")
    if not os.path.isfile(path):
        raise InputError(f"{path!r} not found (make the set with `stvl data synth --out {data_dir}`)")
    report = SkipReport() if skips is None else skips
    out, seen = [], set()
    for key, rec in read_jsonl(path, report):
        try:
            sample = _synthetic_sample(rec, path, key)
        except AnnotationError as e:
            if skips is None:
                raise
            report.add_error(key, e)
            continue
        query = (sample["vid"], str(rec["entity"]), str(sample["action"]))
        if query not in seen:
            seen.add(query)
            out.append({"idx": len(out), **sample})
    return out


def _synthetic_sample(rec, path: str, key: str) -> dict:
    text, vpart, entries = stride_fmt.parse_sample(rec, key)
    missing = [k for k in ("vid", "entity", "action") if k not in rec]
    if missing:
        raise AnnotationError("missing_field", f"sample lacks {missing[0]!r}", key)
    if not isinstance(vpart["path"], str) or not isinstance(rec["vid"], str):
        raise AnnotationError("bad_field", "the video path and 'vid' must be strings", key)
    target = next((e for e in entries if e.value == stride_fmt.ACTIVE), None)
    if target is None:
        raise AnnotationError("missing_field", "sample has no <active> entry (nothing to find)", key)
    root = os.path.dirname(path)
    ann = os.path.normpath(os.path.join(root, "..", "annotations", rec["vid"] + ".json"))
    try:
        with open(ann) as g:
            duration = float(json.load(g)["duration"])
    except OSError as e:
        raise AnnotationError("missing_file", f"annotation {ann!r} cannot be read ({e.strerror})", key) from None
    except (ValueError, KeyError, TypeError):
        raise AnnotationError("bad_field", f"annotation {ann!r} has no numeric 'duration'", key) from None
    return {"task": "tvg", "source": "stvl-synth", "vid": rec["vid"], "record": key,
            "video": os.path.normpath(os.path.join(root, vpart["path"])), "duration": duration,
            "q": text, "tgt": [target.start, target.end], "action": rec["action"],
            "clip": [float(vpart["start_seconds"]), float(vpart["end_seconds"])]}


class ConstantStream(StrideStream):
    """The detector's loop with p(active) fixed (the always-on / always-off baselines); no model."""

    def __init__(self, p: float, window, cfg: StreamConfig):
        self.p, self.stride, self.cfg, self.model = float(p), window, cfg, None

    def _chunk_predictor(self, prefix, cache, groups):
        return (lambda labels: np.full(len(labels), self.p, np.float32)), False

    def _mega_prefix(self, query, frames, start, end):
        return None, None


class OracleStream(ConstantStream):
    """The detector's loop with p(active) = 1 exactly on the slots whose middle lies inside a ground-truth
    segment: the ceiling of the runtime + trigger rules + scoring (a check of slot timing, not a model)."""

    def __init__(self, segments, window, cfg: StreamConfig):
        super().__init__(0.0, window, cfg)
        self.segments = np.asarray(segments, np.float64).reshape(-1, 2)
        self._start = 0

    def _mega_prefix(self, query, frames, start, end):
        self._start = start  # the mega-window's first frame: the slot times of its chunks follow from it
        return None, None

    def _chunk_predictor(self, prefix, cache, groups):
        sc = self.stride  # the chunk's slot grid, from the stream's times as the loop builds it
        starts, ends, _ = slot_grid(self._times, self._start, FRAMES_PER_GROUP * groups, sc.window, sc.future,
                                    sc.resolution)
        mid = (starts + ends) / 2
        inside = ((mid[:, None] >= self.segments[:, 0]) & (mid[:, None] < self.segments[:, 1])).any(1)
        return (lambda labels: inside.astype(np.float32)), False


def etbench_samples(anno: str, videos: str, tasks: Sequence[str], skips: SkipReport | None = None) -> list[dict]:
    """ET-Bench samples of `tasks` with video paths resolved against `videos` (bad samples: `read_annotations`)."""
    return [{**s, "video": os.path.join(videos, s["video"])} for s in etbench.read_annotations(anno, tasks, skips)]


def detector_factory(detector: StrideStream) -> Callable[[dict], StrideStream]:
    """sample -> a stream of `detector`'s model and prompt (`infer.stride_runtime.load_detector`), in multi-event
    mode for the sample tasks the reference runs that way."""

    def factory(sample: dict) -> StrideStream:
        return StrideStream(detector.model, detector.prompt,
                            detector.cfg.replace(multi_event=etbench.is_multi_event(sample["task"])))
    return factory


def plot_samples(samples: Sequence[dict], path: str, max_rows: int = 24) -> str:
    """Ground truth (green) vs predicted segments (blue) and trigger times (red) of the first samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(samples)[:max_rows]
    fig, ax = plt.subplots(figsize=(10, 0.45 * max(len(rows), 1) + 1))
    for k, s in enumerate(rows):
        y = len(rows) - 1 - k
        for g in etbench._segments(s["tgt"], "sample"):
            ax.barh(y + 0.18, g[1] - g[0], left=g[0], height=0.32, color="tab:green")
        for g in s.get("segments", []):
            ax.barh(y - 0.18, g[1] - g[0], left=g[0], height=0.32, color="tab:blue")
        for t in s.get("triggers", []):
            if t is not None:
                ax.plot([t, t], [y - 0.4, y + 0.4], color="tab:red", lw=1)
    ax.set_yticks(range(len(rows)), [s["q"][:48] for s in reversed(rows)], fontsize=6)
    ax.set_xlabel("seconds (green: ground truth, blue: STRIDE segments, red: trigger time)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_stream(sample: dict, fps: float) -> VideoClip:
    """The sample's whole video at `fps` with its decoded timestamps, sampled as the released STRIDE evaluation
    does (`data_pipelines.video.stream_indices`); the video must cover the sample's `clip` (if any), as in
    training."""
    clip, source = sample.get("clip") or (None, None), sample.get("record", "")
    return read_stream(sample["video"], fps, check=lambda info: check_clip_in_video(info, *clip, source))


def evaluate(stream_factory: Callable[[dict], StrideStream], samples: Sequence[dict], *, fps: float = 1.0,
             zero_pixels: bool = False, progress: bool = True, skips: SkipReport | None = None) -> dict:
    """Stream every sample (its whole video with its decoded timestamps, `load_stream`; query `q`); fills `a` and
    returns {"metrics": etbench.score(...), "samples": [...with a, segments, chunk timelines...], "latency": {...},
    "skipped": {...}}. A sample whose video cannot be decoded, does not cover its clip or is too short for the
    stream is counted in `skips` (`skips=None` raises). `zero_pixels`: every frame black (same count and size),
    a control for how much of the score comes from the video."""
    done, chunk_ms = [], []
    report = SkipReport() if skips is None else skips
    for i, s in enumerate(tqdm(samples, desc="stride eval", unit="video", disable=not progress)):
        try:
            clip = load_stream(s, fps)
            frames = np.zeros_like(clip.frames) if zero_pixels else clip.frames
            runner = stream_factory(s)
            t0 = time.perf_counter()
            result: StreamResult = runner.run(frames, s["q"], times=clip.times)
        except InputError as e:
            if skips is None:
                raise
            report.add_error(s.get("record", f"sample {s.get('idx', i)}"), e)
            continue
        wall = time.perf_counter() - t0
        segs = etbench.clip_segments([(g.start, g.end) for g in result.segments], s.get("duration", np.inf))
        chunk_ms += [1000 * c.latency_s for c in result.chunks]
        done.append({**s, "a": etbench.format_answer(segs, s["task"]) if segs else "",
                     "segments": segs, "triggers": [g.trigger_time for g in result.segments],
                     "kinds": [g.kind for g in result.segments], "wall_s": wall,
                     "timeline": [{"t": c.t_last, "starts": c.slot_starts.tolist(), "labels": c.labels.tolist()}
                                  for c in result.chunks]})
    lat = np.asarray(chunk_ms) if chunk_ms else np.zeros(1)
    return {"metrics": etbench.score(done), "samples": done,
            "latency": {"chunks": len(chunk_ms), "median_ms": float(np.median(lat)),
                        "p90_ms": float(np.percentile(lat, 90))}, "skipped": report.as_dict()}


def baselines(window, cfg: StreamConfig, samples: Sequence[dict], fps: float = 1.0) -> dict:
    """Metrics of the always-on and always-off detectors on the same samples, and of the oracle (the ground
    truth as slot labels: what the loop and the scoring allow at best)."""
    def stream(s, p):
        c = cfg.replace(multi_event=etbench.is_multi_event(s["task"]))
        if p is None:
            return OracleStream(etbench._segments(s["tgt"], "sample"), window, c)
        return ConstantStream(p, window, c)

    out = {}
    for name, p in (("always_on", 1.0), ("always_off", 0.0), ("oracle", None)):
        out[name] = evaluate(lambda s, p=p: stream(s, p), samples, fps=fps, progress=False)["metrics"]
    return out
