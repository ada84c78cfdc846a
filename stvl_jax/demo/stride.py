"""Demo stage: the tiny STRIDE recipe (configs/train/stride_tiny.yaml) on the demo world's activation samples,
then `stvl eval stride` on the held-out split with the pixels and with every frame black, beside the always-on /
always-off baselines, and `stvl stream` on one held-out video (timeline.png with the ground truth drawn)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

TRAIN_CONFIG = "stride_tiny"  # the packaged configs/train/stride_tiny.yaml
# `stvl eval stride` / `stvl stream` flags for the tiny window (16 slots; docs/stride.md)
STREAM_FLAGS = ("--chunk", "2", "--max-window", "16")


def train_stride(workdir: str, data_dir: str, tokenizer: str, *, steps: int | None, extra: Sequence[str] = (),
                 log=print) -> tuple[str, dict]:
    """`stvl train configs/train/stride_tiny.yaml` on data_dir/stride/train.jsonl -> (final checkpoint, summary)."""
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer

    overrides = [f"out_dir={os.path.join(workdir, 'stride_train')}",
                 f"data.pipeline.index={os.path.join(data_dir, 'stride', 'train.jsonl')}",
                 f"data.pipeline.tokenizer={tokenizer}", "checkpoint.resume=auto"]
    if steps is not None:
        overrides += [f"steps={steps}", f"checkpoint.every={steps}"]
    cfg = load_train_config(TRAIN_CONFIG, [*overrides, *extra])
    log(f"  training {cfg.model.config} for {cfg.steps} steps on mesh {cfg.mesh.shape()} "
        f"(batch {cfg.data.batch_size}, lr {cfg.optim.lr}, loss {cfg.loss.kind}) -> {cfg.out_dir}")
    summary = Trainer(cfg).run()
    return os.path.join(summary["checkpoint_dir"], str(summary["step"])), summary


def _eval_args(ckpt: str, data_dir: str, tokenizer: str, out: str, split: str, zero_pixels: bool,
               limit: int | None = None):
    """The parsed `stvl eval stride` command line (its defaults), so that the CLI reproduces the demo's numbers."""
    from stvl_jax.eval.cli import _stride_common

    p = argparse.ArgumentParser()
    p.add_argument("--ckpt")
    p.add_argument("--data")
    p.add_argument("--split")
    _stride_common(p)
    argv = ["--ckpt", ckpt, "--data", data_dir, "--split", split, "--tokenizer", tokenizer, "--out", out,
            *STREAM_FLAGS, *(["--zero-pixels"] if zero_pixels else []), *(["--limit", str(limit)] if limit else [])]
    return p.parse_args(argv), argv


def _f1(metrics: dict) -> tuple[float, float, int]:
    m = metrics["tvg"]["stvl-synth"]
    return m["F1@0.5"], m["F1"], m["Total"]


def evaluate_stride(ckpt: str, data_dir: str, tokenizer: str, out_dir: str, *, split: str = "test",
                    limit: int | None = None, log=print) -> dict:
    """Held-out span F1@0.5 with the pixels and with every frame black, beside the baselines (always-on,
    always-off, the oracle), as `stvl eval stride` computes them -> the demo_results "stride" entry."""
    from stvl_jax.eval.cli import run_stride

    runs = {}
    for zero in (False, True):
        args, argv = _eval_args(ckpt, data_dir, tokenizer, os.path.join(out_dir, "zero_pixels" if zero else "."),
                                split, zero, limit)
        args.task = "stride"
        runs[zero] = run_stride(args)
    f1, f1_mean, n = _f1(runs[False]["metrics"])
    z_f1, z_mean, _ = _f1(runs[True]["metrics"])
    base = {k: _f1(v)[0] for k, v in runs[False]["baselines"].items()}
    log(f"  held-out span F1@0.5 {f1:.3f} | every frame black {z_f1:.3f} | always-on {base['always_on']:.3f} | "
        f"always-off {base['always_off']:.3f} | oracle {base['oracle']:.3f}  ({n} queries; F1 mean over tIoU "
        f"{f1_mean:.3f} vs {z_mean:.3f} black)")
    cli = _eval_args(ckpt, data_dir, tokenizer, "OUT", split, False, limit)[1]
    log(f"  same numbers: stvl eval stride {' '.join(cli)}")
    return {"f1@0.5": f1, "f1_mean_tiou": f1_mean, "queries": n,
            "zero_pixels": {"f1@0.5": z_f1, "f1_mean_tiou": z_mean},
            "baselines": {k: {"f1@0.5": v} for k, v in base.items()}}


def stream_example(ckpt: str, data_dir: str, tokenizer: str, out_dir: str, *, split: str = "test",
                   log=print) -> dict:
    """`stvl stream` on the first held-out query: timeline.png (ground truth drawn) and stream.json in out_dir."""
    from stvl_jax.eval.stride_eval import synthetic_samples
    from stvl_jax.infer.cli import main as stream_main

    sample = synthetic_samples(data_dir, split)[0]
    argv = [sample["video"], "--query", sample["q"], "--ckpt", ckpt, "--tokenizer", tokenizer, *STREAM_FLAGS,
            "--out", out_dir]
    log(f"  stvl stream {' '.join(argv)}")
    stream_main(argv)
    with open(os.path.join(out_dir, "stream.json")) as f:
        spans = json.load(f).get("segments")
    return {"video": sample["video"], "query": sample["q"], "gt": sample["tgt"], "segments": spans,
            "timeline": os.path.join(out_dir, "timeline.png")}
