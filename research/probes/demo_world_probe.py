"""Does the demo's recipe read the demo world's pixels? (research/notes/demo.md, 2026-12-07)

Makes the demo world (`data_pipelines/synthetic/demo_world.py`: one quadrant-sized bright block, random timing,
questions that name nothing), trains the demo's Streamo recipe and/or the STRIDE recipe on it (one device,
`--steps`), and scores the held-out split with the pixels and with every frame black, beside the majority /
always-on / always-off baselines: the demo's own evaluations (`stvl_jax.demo.streamo`, `stvl_jax.demo.stride`).

    python -m research.probes.demo_world_probe --stages streamo --steps 300 --videos 200
    python -m research.probes.demo_world_probe --stages stride --steps 300 --set optim.lr=3e-3
    python -m research.probes.demo_world_probe --stages streamo --out DIR --ckpt DIR/train/checkpoints/100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="streamo,stride")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--out", default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe overrides")
    ap.add_argument("--ckpt", default=None, help="score this checkpoint of the one stage named (no training)")
    a = ap.parse_args()
    from data_pipelines.synthetic.demo_world import DemoWorldConfig, generate_demo_world
    from data_pipelines.tokenizer import build_tiny_tokenizer

    root = a.out or tempfile.mkdtemp(prefix="demo_world_")
    data = f"{root}/synth"
    if not os.path.isfile(f"{data}/manifest.json"):
        generate_demo_world(data, DemoWorldConfig(num_videos=a.videos))
    tok = build_tiny_tokenizer(f"{root}/tokenizer")
    one_device = ["mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1", *a.set]
    results = {}
    for stage in a.stages.split(","):
        t0 = time.time()
        if stage == "streamo":
            from stvl_jax.demo.streamo import evaluate, pixel_control, train_streamo, write_streams

            streams = write_streams(data, f"{root}/streamo")
            if a.ckpt:
                import stvl_jax

                model, summary = stvl_jax.load_model(a.ckpt), {"history": []}
            else:
                trainer, summary = train_streamo(root, streams, tok, steps=a.steps, extra=one_device)
                model = trainer.model()
            eval_dir = f"{root}/eval_{os.path.basename(a.ckpt)}" if a.ckpt else f"{root}/eval"
            result = evaluate(model, tok, streams["test"], eval_dir)
            results[stage] = {"eval": result["metrics"],
                              "eval_zero_pixels": pixel_control(model, tok, streams["test"], eval_dir, result)}
        elif stage == "stride":
            from stvl_jax.demo.stride import evaluate_stride, train_stride

            if a.ckpt:
                ckpt, summary = a.ckpt, {"history": []}
            else:
                ckpt, summary = train_stride(root, data, tok, steps=a.steps, extra=one_device)
            results[stage] = evaluate_stride(ckpt, data, tok, f"{root}/stride_eval_{os.path.basename(ckpt)}")
        else:
            raise SystemExit(f"--stages: {stage!r} is not streamo or stride")
        times = sorted(h["step_time_s"] for h in summary["history"] if "step_time_s" in h)
        results[stage]["median_step_s"] = round(times[len(times) // 2], 3) if times else None
        results[stage]["stage_s"] = round(time.time() - t0, 1)
        step = os.path.basename(os.path.normpath(a.ckpt)) if a.ckpt else str(a.steps)
        results[stage]["steps"] = int(step) if step.isdigit() else step
        print(stage, json.dumps({k: v for k, v in results[stage].items() if not isinstance(v, dict)}), flush=True)
    with open(f"{root}/probe_results{'_' + os.path.basename(a.ckpt) if a.ckpt else ''}_{a.stages}.json", "w") as f:
        json.dump({"steps": a.steps, "videos": a.videos, "overrides": a.set, "results": results}, f, indent=1)
    print(f"results in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
