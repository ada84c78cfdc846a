"""Does the project's STRIDE streaming loop decide exactly as the released STRIDE code? (issue #37; not in CI)

Runs the reference's `STRIDEQwen3VL.detect` (eval/model/qwen3_stride.py of github.com/interlive-team/STRIDE,
read from a local copy; torch CPU) and the project's `infer.stride_loop.run_stream` on the same stub model: p(active)
is a deterministic function of the view (first frame, frames in view) and of the slot labels fed in — higher on
slots inside a few random "events", coupled to the labels of the neighbouring slots, quantised to 1/20 so that
confidences tie often. Both sides draw from numpy's legacy generator seeded alike (`np.random.seed(s)` there,
`np.random.RandomState(s)` here). Only the model is stubbed: prefix building returns a cache stub that records
the view, `_denoise_step` calls the stub, `preprocess_frames` is the identity; the loop, the schedule, `_unmask`,
the retain step and `_update_segments` are the reference's own code.

Per scenario and seed it compares the labels of every diffusion, the number of forwards and the reported
segments, and prints the share of seeds where each agrees.

    python -m research.probes.stride_upstream_parity --upstream /path/to/STRIDE/eval/model/qwen3_stride.py
    python -m research.probes.stride_upstream_parity --upstream FILE --seeds 50 --scenarios default,odd
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from dataclasses import dataclass

import numpy as np

SCENARIOS = {
    # name: (window, future, chunk, max_window, stride, frames, steps, confidence, multi, fractional times)
    "default": (32, 0, 16, 64, 16, 160, 8, 0.75, False, False),
    "multi": (32, 0, 16, 64, 16, 160, 8, 0.75, True, False),
    "odd": (16, 0, 8, 32, 8, 81, 8, 0.75, True, False),
    "short_window": (8, 0, 16, 32, 16, 96, 4, 0.75, True, False),  # slot window shorter than a chunk
    "no_retain": (32, 0, 16, 64, 16, 128, 8, None, True, False),
    "fractional": (32, 0, 16, 64, 16, 160, 8, 0.75, True, True),  # 29.97 fps decode: non-integer slot shifts
    "future": (16, 4, 8, 32, 8, 96, 8, 0.75, True, False),
    "stride_eq_window": (16, 0, 16, 32, 32, 97, 8, 0.75, True, False),  # last view of one frame: skipped
}


@dataclass
class Case:
    window: int
    future: int
    chunk: int
    max_window: int
    stride: int
    frames: int
    steps: int
    confidence: float | None
    multi: bool
    fractional: bool


def stub_times(n: int, fractional: bool) -> np.ndarray:
    if not fractional:
        return np.arange(n, dtype=np.float64)
    fps = 29.97  # the reference's loader: indices round(k * avg_fps / fps), times index / avg_fps
    idx = np.arange(0, n * fps, fps).round().astype(int)[:n]
    return idx / fps


class StubModel:
    """p(active) of each slot for a view (first frame, frames in view) and the labels fed in."""

    def __init__(self, times, case: Case, seed: int):
        self.times, self.case = times, case
        rng = np.random.default_rng(10_000 + seed)
        dur = float(times[-1]) + 1
        starts = np.sort(rng.uniform(0, dur, 3))
        self.events = np.stack([starts, starts + rng.uniform(2, 10, 3)], 1)
        self.seed = seed

    def __call__(self, start: int, n: int, labels: np.ndarray) -> np.ndarray:
        c = self.case
        w = c.window + c.future
        t_last = float(self.times[start + n - 1])
        mid = t_last - c.window + np.arange(w) + 0.5
        on = ((mid[:, None] >= self.events[:, 0]) & (mid[:, None] < self.events[:, 1])).any(1)
        noise = np.random.default_rng([self.seed, start, n]).integers(-4, 5, w) / 20
        lab = np.asarray(labels)
        act = (lab == 1).astype(float)
        off = (lab == 0).astype(float)
        nb_on = np.convolve(act, [1, 0, 1], "same")
        nb_off = np.convolve(off, [1, 0, 1], "same")
        p = np.where(on, 0.75, 0.25) + noise + 0.05 * (nb_on - nb_off)
        return (np.clip(np.round(p * 20) / 20, 0.05, 0.95)).astype(np.float32)


def load_upstream(path: str):
    """The reference module with its model-side imports stubbed (only the loop's code runs)."""
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__path__ = []
        sys.modules[name] = m
        return m

    class _Cache:
        def __init__(self):
            self.start, self.groups = None, None

        def crop(self, n):
            self.groups = n

    transformers = module("transformers", AutoProcessor=object)
    transformers.cache_utils = module("transformers.cache_utils", DynamicCache=_Cache)
    module("stride")
    module("stride.model", Qwen3VLForSTRIDE=type("Qwen3VLForSTRIDE", (), {}))
    module("stride.utils")
    module("stride.utils.input_processing", VideoSpec=None, resize_image=None, resolve_resolution=None)
    module("upstream_eval")
    module("upstream_eval.model", register_model=lambda name: (lambda cls: cls))
    module("upstream_eval.model.base", BaseTriggerModel=type("BaseTriggerModel", (), {}))
    spec = importlib.util.spec_from_file_location("upstream_eval.model.qwen3_stride", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod, _Cache


def run_upstream(mod, cache_cls, stub: StubModel, times, case: Case, seed: int):
    cls = mod.STRIDEQwen3VL
    model = object.__new__(cls)
    model.config = types.SimpleNamespace(trigger_window_past=case.window, trigger_window_future=case.future,
                                         trigger_temporal_resolution=1.0)
    model.trigger_args = mod.STRIDETriggerArguments(
        chunk_size=case.chunk, max_window_size=case.max_window, stride=case.stride, unmasking_steps=case.steps,
        confidence_threshold="none" if case.confidence is None else str(case.confidence))
    model._frame_time_patch = 2
    model._inactive_token_id, model._active_token_id, model._activation_token_id = 0, 1, 2
    diffusions, calls = [], [0]

    def build(frames, timestamps):
        cache = cache_cls()
        cache.start = int(frames[0])
        return cache, np.arange(1, len(frames) // 2 + 1)  # crop length = frame groups in view

    def denoise_step(cache, labels):
        calls[0] += 1
        return stub(cache.start, 2 * cache.groups, labels)

    orig = cls._diffuse_shifted

    def diffuse(self, *a, **k):
        out = orig(self, *a, **k)
        diffusions.append(out[0].copy())
        return out

    model._build_prefix_cache = build
    model._denoise_step = denoise_step
    model.preprocess_frames = lambda frames: frames
    model._diffuse_shifted = types.MethodType(diffuse, model)
    model.start_stream("query", is_multi_event=case.multi)
    np.random.seed(seed)
    segs = model.detect(np.arange(len(times)), times)
    return [(s["start_sec"], s["end_sec"]) for s in segs], diffusions, calls[0]


def run_project(stub: StubModel, times, case: Case, seed: int):
    from stvl_jax.infer import stride_loop
    from stvl_jax.infer.stride_runtime import StreamConfig
    from stvl_jax.models.stride.triggers import TriggerTracker

    cfg = StreamConfig(chunk_size=case.chunk, max_window=case.max_window, stride=case.stride, steps=case.steps,
                       confidence=case.confidence, multi_event=case.multi, seed=seed)
    diffusions, calls = [], [0]
    orig = stride_loop.denoise

    def denoise(*a, **k):
        out = orig(*a, **k)
        diffusions.append(out.labels.copy())
        return out

    def open_view(start, end, n):
        def predict(labels):
            calls[0] += 1
            return stub(start, n, labels)
        return predict, False

    stride_loop.denoise = denoise
    try:
        res = stride_loop.run_stream(times, open_view, cfg, TriggerTracker(cfg.margin, cfg.multi_event,
                                                                          cfg.max_triggers),
                                     window=case.window, future=case.future, resolution=1.0)
    finally:
        stride_loop.denoise = orig
    return [(g.start, g.end) for g in res.segments], diffusions, calls[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="the reference's eval/model/qwen3_stride.py")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = p.parse_args(argv)
    mod, cache_cls = load_upstream(args.upstream)
    print(f"numpy {np.__version__}; {args.seeds} seeds per scenario")
    print(f"{'scenario':<17} {'segments':>9} {'diffusions':>11} {'forwards':>9}  fwd/chunk ref  mean segs")
    worst = 1.0
    for name in args.scenarios.split(","):
        case = Case(*SCENARIOS[name])
        times = stub_times(case.frames, case.fractional)
        same_seg = same_diff = same_fwd = 0
        fwd, nseg, chunks = 0, 0, 0
        for seed in range(args.seeds):
            stub = StubModel(times, case, seed)
            a = run_upstream(mod, cache_cls, stub, times, case, seed)
            b = run_project(stub, times, case, seed)
            same_seg += np.allclose(a[0], b[0], rtol=0, atol=0) if len(a[0]) == len(b[0]) else 0
            same_diff += len(a[1]) == len(b[1]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
            same_fwd += a[2] == b[2]
            fwd, nseg = fwd + a[2], nseg + len(a[0])
            chunks += -(-case.frames // case.chunk)
        n = args.seeds
        worst = min(worst, same_seg / n, same_diff / n, same_fwd / n)
        print(f"{name:<17} {same_seg / n:>9.1%} {same_diff / n:>11.1%} {same_fwd / n:>9.1%}  "
              f"{fwd / chunks:>13.2f}  {nseg / n:>9.2f}")
    print(f"lowest agreement: {worst:.1%}")
    return 0 if worst == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
