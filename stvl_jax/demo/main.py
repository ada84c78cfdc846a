"""`stvl demo` orchestration: each stage prints what it did; results go to OUT/demo_results.json.

    stvl demo                      every stage
    stvl demo streamo|stride|parity   one stage (the world is made first if OUT has none)

Stages: 1) make the demo world (`data_pipelines/synthetic/demo_world.py`: one quadrant-sized bright block whose
timing is random per video, questions that name nothing; docs/training.md); 2) parity: convert a tiny HF
Qwen3-VL, run it sharded on a simulated 8-device (2x2x2) CPU mesh on a demo video and check it against PyTorch;
3) Streamo SFT of a tiny Qwen2.5-VL on the world's streams, sharded on the same mesh, with Orbax checkpoints,
then the streaming evaluation on held-out videos (1 FPS, KV cache reused across turns) beside the majority
baseline and the same evaluation with every frame black; 4) STRIDE: the tiny STRIDE recipe on the world's
activation samples, `stvl eval stride` on the held-out split with the pixels and with every frame black beside
always-on / always-off, and `stvl stream` on one held-out video (timeline.png).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from stvl_jax.cli_args import output_dir, positive_int

DEFAULT_VIDEOS = 200
STRIDE_STEPS = 900


def _ensure_devices(n: int) -> None:
    """Simulated CPU devices must be requested before JAX initialises."""
    if "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


STAGES = ("parity", "streamo", "stride")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stvl demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", choices=STAGES, default=None, help="run this stage only (default: all)")
    p.add_argument("--out", type=output_dir, default="runs/demo", help="working directory (default: runs/demo)")
    p.add_argument("--videos", type=positive_int, default=DEFAULT_VIDEOS, help="demo-world videos to make")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-parity", action="store_true", help="skip the PyTorch parity stage")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="Streamo training steps (default: the config's)")
    p.add_argument("--stride-steps", type=positive_int, default=STRIDE_STEPS,
                   help=f"STRIDE training steps (default {STRIDE_STEPS})")
    p.add_argument("--eval-split", default="test", choices=["val", "test"])
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate at most this many streams")
    args = p.parse_args(argv)
    stages = [args.stage] if args.stage else [s for s in STAGES if not (s == "parity" and args.skip_parity)]
    _ensure_devices(8)

    import jax

    from data_pipelines.synthetic.demo_world import DemoWorldConfig, generate_demo_world
    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax.sharding import make_mesh

    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    results_path = os.path.join(args.out, "demo_results.json")
    results: dict = {}
    if args.stage and os.path.isfile(results_path):  # one stage: the other stages' results stay
        with open(results_path) as f:
            results = json.load(f)
    print(f"stvl demo -> {os.path.abspath(args.out)}  ({len(jax.devices())} {jax.devices()[0].platform} devices; "
          f"stages {', '.join(stages)})")

    print("[1] the demo world: one bright quadrant-sized block, random timing, questions that name nothing")
    data = os.path.join(args.out, "synth")
    manifest = os.path.join(data, "manifest.json")
    cfg = DemoWorldConfig(num_videos=args.videos, seed=args.seed)
    if not _same_world(manifest, cfg):
        generate_demo_world(data, cfg, progress=True)
    tok = build_tiny_tokenizer(os.path.join(args.out, "tokenizer"))
    with open(manifest) as f:
        results["data"] = {k: len(v) for k, v in json.load(f)["splits"].items()}
    print(f"  {args.videos} videos in {data} (splits {results['data']})")

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    if "parity" not in stages:
        print("[2] parity stage skipped")
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("[2] parity stage skipped: torch is not installed (pip install torch==2.13.0)")
        else:
            from stvl_jax.demo.parity import run_parity

            print("[2] HF Qwen3-VL -> Orbax -> sharded JAX vs PyTorch on a demo video")
            video = os.path.join(data, "videos", sorted(os.listdir(os.path.join(data, "videos")))[0])
            results["parity"] = run_parity(args.out, video, tok, mesh)

    if "streamo" in stages:
        _streamo_stage(args, data, tok, mesh, results)
    if "stride" in stages:
        _stride_stage(args, data, tok, results)

    results["seconds"] = round(time.time() - t0, 1)
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"done in {results['seconds']} s; results in {results_path}")
    return 0


def _same_world(manifest: str, cfg) -> bool:
    """An existing world made with the same settings is reused (one-stage runs after a full one)."""
    from dataclasses import asdict

    if not os.path.isfile(manifest):
        return False
    with open(manifest) as f:
        return json.load(f).get("config") == json.loads(json.dumps(asdict(cfg)))


def _streamo_stage(args, data: str, tok: str, mesh, results: dict) -> None:
    from stvl_jax.demo.streamo import evaluate, final_checkpoint, pixel_control, train_streamo, write_streams

    print("[3] Streamo SFT: tiny Qwen2.5-VL, state tokens with the focal loss, vision tower frozen")
    streams = write_streams(data, os.path.join(args.out, "streamo"))
    trainer, summary = train_streamo(args.out, streams, tok, steps=args.steps)
    results["train"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, list, dict))}

    print(f"    streaming evaluation on held-out ({args.eval_split}) videos")
    # the final checkpoint as `stvl eval streamo --ckpt` loads it: weights and preprocessing from the checkpoint
    import stvl_jax

    ckpt = final_checkpoint(summary)
    model, eval_dir = stvl_jax.load_model(ckpt, mesh=mesh), os.path.join(args.out, "eval")
    print(f"    checkpoint {ckpt} (same numbers: stvl eval streamo --ckpt {ckpt} --data "
          f"{os.path.join(args.out)} --split {args.eval_split} --tokenizer {tok} --out OUT)")
    result = evaluate(model, tok, streams[args.eval_split], eval_dir, limit=args.eval_limit)
    results["eval"] = result["metrics"]
    results["eval_zero_pixels"] = pixel_control(model, tok, streams[args.eval_split], eval_dir, result,
                                                limit=args.eval_limit)


def _stride_stage(args, data: str, tok: str, results: dict) -> None:
    from stvl_jax.demo.stride import evaluate_stride, stream_example, train_stride

    print("[4] STRIDE: tiny Qwen3-VL activation model (masked diffusion over 1-s slots), vision tower frozen")
    ckpt, summary = train_stride(args.out, data, tok, steps=args.stride_steps)
    print(f"    streaming evaluation on held-out ({args.eval_split}) queries, checkpoint {ckpt}")
    out = os.path.join(args.out, "stride_eval")
    results["stride"] = {**evaluate_stride(ckpt, data, tok, out, split=args.eval_split, limit=args.eval_limit),
                         "train": {"step": summary["step"], "loss": summary["loss"]},
                         "stream": stream_example(ckpt, data, tok, os.path.join(args.out, "stream"),
                                                  split=args.eval_split)}
