"""STRIDE streaming latency: per-chunk time with and without prefix-cache reuse, on the real runtime loop.

The detector (`stvl_jax.infer.stride_runtime.StrideStream`) runs over a random-frame stream three times:
  mega  — the reference: one prefill per mega-window, cropped per chunk; each step appends the 2W slot tokens;
  chunk — one prefill per chunk (its own frames), shared by the chunk's steps;
  none  — every denoising step re-runs [query, video, slots] from scratch (vision tower included).
A warm-up pass compiles every shape first; the timed pass reports the median per-chunk wall time, the median
time per model call (forward), the forwards per chunk (median, range and the per-chunk list) and the ratios
none / mega and chunk / mega. Spans never complete (margin = inf), so every chunk runs one diffusion: the retain
forward (from the second chunk on) and the steps the reference's schedule needs — the seen slots spread over
`--steps`, each step capped at what is still masked, so a chunk whose history is mostly retained needs few
forwards. The three passes draw alike (same seed) and do the same forwards. Weights are random (timing only);
prompts are synthetic token ids, so no tokenizer is needed.

    stvl bench stride_latency                                # tiny STRIDE on CPU (fp32)
    stvl bench stride_latency --preset qwen3vl_2b --dtype bfloat16 --window 256 --chunk 32 \\
        --max-window 128 --frames 256 --size 512 --modes mega,chunk   # 2B-shaped, on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys


class SyntheticPrompt:
    """`StridePrompt` stand-in: a text header, then per frame pair 4 "timestamp" ids, <|vision_start|>, the
    video pads, <|vision_end|>; random pixel rows (the model only needs the shapes)."""

    def __init__(self, config, stride, size: int, seed: int = 0):
        import numpy as np

        self.config, self.stride, self.size = config, stride, size
        self.rng = np.random.default_rng(seed)

    def prefix(self, query, frames, times):
        import numpy as np

        from stvl_jax.infer.stride_prompt import VideoPrefix
        from stvl_jax.models.qwen_vl.host.positions import get_rope_index

        c, vc = self.config, self.config.vision
        groups, side = len(frames) // 2, self.size // vc.patch_size
        per_group = side * side // vc.merge_unit
        ids, ends = list(self.rng.integers(20, 400, 12)), []
        for _ in range(groups):
            ids += list(self.rng.integers(20, 400, 4)) + [c.vision_start_token_id]
            ids += [c.video_token_id] * per_group + [c.vision_end_token_id]
            ends.append(len(ids) - 1)
        ids = np.asarray(ids, np.int32)
        grid = (groups, side, side)
        pos, _ = get_rope_index(ids[None], video_grid_thw=np.asarray([grid]), image_token_id=c.image_token_id,
                                video_token_id=c.video_token_id, spatial_merge_size=vc.spatial_merge_size)
        pixels = self.rng.standard_normal((groups * side * side, vc.patch_dim)).astype(np.float32)
        return VideoPrefix(ids, np.asarray(ends), pos[:, 0].astype(np.int32), pixels, grid)

    def slot_ids(self, labels):
        import numpy as np

        return np.tile(np.asarray(self.stride.slot_token_ids, np.int32)[np.asarray(labels)], self.stride.copies)


def synthetic_stream(config, window: int, frames: int, size: int):
    """(SyntheticPrompt with a `window`-slot STRIDE head, (frames, size, size, 3) black uint8 frames)."""
    import numpy as np

    from stvl_jax.models.stride.config import StrideConfig

    stride = StrideConfig(window=window, activation_token_id=10, active_token_id=11, inactive_token_id=12)
    return SyntheticPrompt(config, stride, size), np.zeros((frames, size, size, 3), np.uint8)


def time_stream(model, prompt, frames, *, chunk: int, max_window: int, steps: int, mode: str, runs: int = 1):
    """A warm-up pass over the stream (compiles every shape), then `runs` timed passes -> their StreamResults.
    Spans never complete (margin = inf), so every chunk runs one diffusion (retain step + `steps` steps)."""
    from stvl_jax.infer.stride_runtime import StreamConfig, StrideStream

    cfg = StreamConfig(chunk_size=chunk, max_window=max_window, stride=chunk, steps=steps, margin=float("inf"),
                       cache=mode)
    stream = StrideStream(model, prompt, cfg)
    stream.run(frames, "")
    return [stream.run(frames, "") for _ in range(runs)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="stride_tiny", help="model preset (configs/models) or YAML path")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--window", type=int, default=64, help="slots")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--max-window", type=int, default=32)
    p.add_argument("--frames", type=int, default=64, help="stream length (frames at 1 fps)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (multiple of patch x merge)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--modes", default="mega,chunk,none")
    args = p.parse_args(argv)

    import jax.numpy as jnp

    from benchmarks.common import machine, random_qwen_vl
    from stvl_jax.models.qwen_vl.presets import load_model_config

    config = load_model_config(args.preset)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model = random_qwen_vl(config, dtype=dtype)  # the model's own init (std 0.02), timing only
    prompt, frames = synthetic_stream(config, args.window, args.frames, args.size)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(f"machine: {machine()}")
    print(f"model {args.preset} ({args.dtype}), window {args.window} slots, chunk {args.chunk}, mega-window "
          f"{args.max_window} frames, {args.frames} frames of {args.size}x{args.size} "
          f"({(args.size // config.vision.patch_size) ** 2 // config.vision.merge_unit} tokens per frame pair), "
          f"{args.steps} steps + retain")
    results = {}
    for mode in modes:
        run = time_stream(model, prompt, frames, chunk=args.chunk, max_window=args.max_window, steps=args.steps,
                          mode=mode)[0]
        lat = [c.latency_s for c in run.chunks]
        per_fwd = [c.latency_s / c.forwards for c in run.chunks]
        fwd = [c.forwards for c in run.chunks]
        results[mode] = (statistics.median(lat), statistics.median(per_fwd), len(run.chunks), sum(fwd))
        print(f"  {mode:<5}: per chunk {1000 * results[mode][0]:8.1f} ms (median of {results[mode][2]}), "
              f"per forward {1000 * results[mode][1]:7.2f} ms, {results[mode][3]} forwards")
        print(f"         forwards per chunk: median {statistics.median(fwd):g} (min {min(fwd)}, max {max(fwd)}); "
              f"per chunk {fwd}")
    if "mega" in results:
        for mode in ("none", "chunk"):
            if mode in results:
                print(f"  {mode} / mega per-chunk time: {results[mode][0] / results['mega'][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
