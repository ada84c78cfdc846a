"""`stvl eval TASK ...`: sharded evaluation of a checkpoint on a dataset; metrics to JSON, plots to PNG.

    stvl eval streamo   --ckpt CKPT --data SYNTH_DIR [--split val] [--tokenizer DIR] --out OUT
    stvl eval qvh-yesno --ckpt CKPT --data SYNTH_DIR [--split val] [--tokenizer DIR] --out OUT
"""

from __future__ import annotations

import argparse
import json
import os

from stvl_jax.errors import UserError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="model checkpoint (stvl convert import / training export)")
    p.add_argument("--data", required=True, help="dataset root (e.g. the synthetic set from `stvl data synth`)")
    p.add_argument("--split", default="val")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: <ckpt>/tokenizer)")
    p.add_argument("--out", required=True, help="output dir for metrics.json and plots")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most this many samples")
    p.add_argument("--mesh", default=None, help="mesh shape data,fsdp,tensor (default: all devices on fsdp)")


def _load(args):
    from transformers import AutoTokenizer

    import stvl_jax
    from stvl_jax.sharding import make_mesh

    mesh = make_mesh([int(x) for x in args.mesh.split(",")] if args.mesh else None)
    model = stvl_jax.load_model(args.ckpt, mesh=mesh)
    tok_dir = args.tokenizer or os.path.join(args.ckpt, "tokenizer")
    if not os.path.isdir(tok_dir):
        raise UserError(f"tokenizer directory {tok_dir!r} not found (pass --tokenizer)")
    return model, AutoTokenizer.from_pretrained(tok_dir)


def _vision_config(model):
    from data_pipelines.processor import VisionConfig

    family = model.config.family
    return VisionConfig.qwen3_vl() if family == "qwen3_vl" else VisionConfig.qwen2_5_vl()


def _read_jsonl(path: str, limit: int | None) -> list[dict]:
    if not os.path.isfile(path):
        raise UserError(f"evaluation file {path!r} not found")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def run_streamo(args) -> dict:
    from stvl_jax.eval.plots import plot_confusion, plot_state_timelines
    from stvl_jax.eval.streamo_eval import evaluate_streamo

    model, tok = _load(args)
    path = os.path.join(args.data, "streamo", f"stream_{args.split}.jsonl")
    records = _read_jsonl(path, args.limit)
    result = evaluate_streamo(model, tok, _vision_config(model), records, os.path.dirname(path),
                              max_rounds=args.max_rounds, stop_on_first_response=args.stop_on_first_response)
    os.makedirs(args.out, exist_ok=True)
    m = result["metrics"]
    plot_confusion(m, os.path.join(args.out, "streamo_confusion.png"), "Streamo states")
    plot_state_timelines(result["streams"], m["classes"], os.path.join(args.out, "streamo_timelines.png"))
    with open(os.path.join(args.out, "streamo_metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"streamo/{args.split}: macro-F1 {m['macro_f1']:.3f} (majority baseline {m['baseline']['macro_f1']:.3f}), "
          f"accuracy {m['accuracy']:.3f}, {m['n']} seconds over {len(records)} streams -> {args.out}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stvl eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    s = sub.add_parser("streamo", help="per-second state tokens at 1 FPS with a reused KV cache")
    _common(s)
    s.add_argument("--max-rounds", type=int, default=120)
    s.add_argument("--stop-on-first-response", action="store_true")
    s.set_defaults(func=run_streamo)
    args = p.parse_args(argv)
    args.func(args)
    return 0
