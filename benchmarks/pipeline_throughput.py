"""Frames/s of raw decord decode vs the full Grain pipeline on the synthetic set (1 and 2 workers).

    python benchmarks/pipeline_throughput.py [--videos 64] [--fps 2] [--max-frames 32] [--passes 2]

Raw decode: the same frame indices the pipeline samples, decoded with decord (1 thread) in this process.
Pipeline: `make_pipeline` over the caption chat index (decode -> resize -> patchify -> chat template ->
tokenize -> labels -> M-RoPE positions -> bucket padding -> batch), frames delivered per second of wall time,
timed after the first batch (worker start-up excluded). Ratios are printed side by side; per core means
divided by the number of worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def raw_decode_fps(index: str, fps: float, max_frames: int, passes: int) -> tuple[float, int]:
    import decord

    from data_pipelines.video import probe_video, sample_indices

    root = os.path.dirname(index)
    jobs = []
    for line in open(index):
        part = json.loads(line)["messages"][0]["content"][0]
        path = os.path.normpath(os.path.join(root, part["path"]))
        jobs.append((path, sample_indices(probe_video(path), fps=fps, max_frames=max_frames).tolist()))
    n, t = 0, time.perf_counter()
    for _ in range(passes):
        for path, idx in jobs:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            n += len(vr.get_batch(idx).asnumpy())
    return n / (time.perf_counter() - t), n


def pipeline_fps(index: str, tok: str, fps: float, max_frames: int, workers: int, passes: int) -> tuple[float, int]:
    from data_pipelines.grain import PipelineConfig, make_pipeline

    cfg = PipelineConfig(index=index, tokenizer=tok, format="chat", batch_size=4, video_fps=fps,
                         max_frames=max_frames, shard="none", shuffle=True, num_epochs=passes,
                         worker_count=workers, worker_buffer_size=4, drop_remainder=False)
    it = make_pipeline(cfg)
    next(it)
    f0, t = it.frames, time.perf_counter()
    for _ in it:
        pass
    return (it.frames - f0) / (time.perf_counter() - t), it.frames - f0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="existing synthetic set (default: generate one in a temp dir)")
    p.add_argument("--videos", type=int, default=64)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--max-frames", type=int, default=32)
    p.add_argument("--passes", type=int, default=2)
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="stvl_bench_")
    data = a.data
    if data is None:
        from data_pipelines.synthetic import SynthConfig, generate_dataset

        data = os.path.join(tmp, "synth")
        generate_dataset(data, SynthConfig(num_videos=a.videos, seed=0))
    from data_pipelines.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer(os.path.join(tmp, "tok"))
    index = os.path.join(data, "captions", "train.jsonl")
    raw, n_raw = raw_decode_fps(index, a.fps, a.max_frames, a.passes)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPU cores, python {platform.python_version()}")
    print(f"frames: 128x128 H.264 at 4 fps sampled at {a.fps} fps (<= {a.max_frames} per video), Qwen3-VL processing")
    print(f"{'':<28}{'frames/s':>10}{'frames':>9}{'vs raw':>9}{'per core vs raw':>17}")
    print(f"{'raw decord decode (1 core)':<28}{raw:>10.0f}{n_raw:>9}{1.0:>9.2f}{1.0:>17.2f}")
    for w in (1, 2):
        fps, n = pipeline_fps(index, tok, a.fps, a.max_frames, w, a.passes)
        print(f"{f'grain pipeline, {w} worker(s)':<28}{fps:>10.0f}{n:>9}{fps / raw:>9.2f}{fps / w / raw:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
