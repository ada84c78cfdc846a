"""`stvl demo` orchestration: each stage prints what it did; results go to OUT/demo_results.json.

Stages: 1) make the synthetic space-time video set; 2) convert a tiny HF Qwen3-VL, run it sharded on a
simulated 8-device (2x2x2) CPU mesh on a synthetic video and check it against PyTorch; 3) Streamo SFT of a tiny
Qwen2.5-VL on the synthetic streams, sharded on the same mesh, with Orbax checkpoints; 4) streaming evaluation
of the trained model on held-out videos (1 FPS, KV cache reused across turns) vs the majority baseline, with
metrics JSON and plots, and the same evaluation with every pixel zeroed (does the score come from the video?).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from stvl_jax.cli_args import output_dir, positive_int


def _ensure_devices(n: int) -> None:
    """Simulated CPU devices must be requested before JAX initialises."""
    if "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stvl demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=output_dir, default="runs/demo", help="working directory (default: runs/demo)")
    p.add_argument("--videos", type=positive_int, default=64, help="synthetic videos to make")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-parity", action="store_true", help="skip the PyTorch parity stage")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="Streamo training steps (default: the config's)")
    p.add_argument("--eval-split", default="test", choices=["val", "test"])
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate at most this many streams")
    args = p.parse_args(argv)
    _ensure_devices(8)

    import jax

    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax.sharding import make_mesh

    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    results: dict = {}
    print(f"stvl demo -> {os.path.abspath(args.out)}  ({len(jax.devices())} {jax.devices()[0].platform} devices)")

    print("[1] synthetic space-time video set")
    data = os.path.join(args.out, "synth")
    generate_dataset(data, SynthConfig(num_videos=args.videos, seed=args.seed), progress=True)
    tok = build_tiny_tokenizer(os.path.join(args.out, "tokenizer"))
    with open(os.path.join(data, "manifest.json")) as f:
        results["data"] = {k: len(v) for k, v in json.load(f)["splits"].items()}
    print(f"  {args.videos} videos in {data} (splits {results['data']})")

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    if args.skip_parity:
        print("[2] parity stage skipped")
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("[2] parity stage skipped: torch is not installed (pip install torch==2.13.0)")
        else:
            from stvl_jax.demo.parity import run_parity

            print("[2] HF Qwen3-VL -> Orbax -> sharded JAX vs PyTorch on a synthetic video")
            video = os.path.join(data, "videos", sorted(os.listdir(os.path.join(data, "videos")))[0])
            results["parity"] = run_parity(args.out, video, tok, mesh)

    from stvl_jax.demo.streamo import evaluate, final_checkpoint, pixel_control, train_streamo, write_streams

    print("[3] Streamo SFT: tiny Qwen2.5-VL, state tokens with the focal loss, vision tower frozen")
    streams = write_streams(data, os.path.join(args.out, "streamo"))
    trainer, summary = train_streamo(args.out, streams, tok, steps=args.steps)
    results["train"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, list, dict))}

    print(f"[4] streaming evaluation on held-out ({args.eval_split}) videos")
    # the final checkpoint as `stvl eval streamo --ckpt` loads it: weights and preprocessing from the checkpoint
    import stvl_jax

    ckpt = final_checkpoint(summary)
    model, eval_dir = stvl_jax.load_model(ckpt, mesh=mesh), os.path.join(args.out, "eval")
    print(f"  checkpoint {ckpt} (same numbers: stvl eval streamo --ckpt {ckpt} --data "
          f"{os.path.join(args.out)} --split {args.eval_split} --tokenizer {tok} --out OUT)")
    result = evaluate(model, tok, streams[args.eval_split], eval_dir, limit=args.eval_limit)
    results["eval"] = result["metrics"]
    results["eval_zero_pixels"] = pixel_control(model, tok, streams[args.eval_split], eval_dir, result,
                                                limit=args.eval_limit)

    results["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"done in {results['seconds']} s; results in {os.path.join(args.out, 'demo_results.json')}")
    return 0
