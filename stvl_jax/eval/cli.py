"""`stvl eval TASK ...`: sharded evaluation of a checkpoint on a dataset; metrics to JSON, plots to PNG.

    stvl eval streamo   --ckpt CKPT --data SYNTH_DIR [--split val] [--tokenizer DIR] --out OUT
    stvl eval qvh-yesno --ckpt CKPT --data SYNTH_DIR [--split val] [--tokenizer DIR] --out OUT
    stvl eval stride    --ckpt CKPT --data SYNTH_DIR [--split test] [--tokenizer DIR] --out OUT [stream flags]
    stvl eval etbench   --ckpt CKPT --anno etbench_txt_v1.0.json --videos DIR --out OUT [--tasks tvg,epm,...]
    stvl eval etbench-score PREDICTIONS.json [--sentsim-model DIR] [--json OUT.json]   (the official E.T. Bench
                        metrics of a file whose samples carry answers "a")
    stvl eval vos       --ckpt SAM2_CKPT --data SYNTH_DIR [--split test] --out OUT   (J, F, J&F per case)
    stvl eval rvos      --ckpt VIRST_CKPT | --predictions DIR --data ROOT --format mevis|refytvos|revos|synthetic
                        [--split S] --out OUT
                        (referring segmentation: J, F, J&F per split / query kind; submission PNGs; docs/virst.md)
    stvl eval strefer   --ckpt CKPT --data HELD_OUT_ENGINE_OUT --tokenizer DIR --out OUT [--prior TRAIN_OUT]
                        (Strefer text pairs: exact-match accuracy per question family beside the no-frames and
                        black-frames controls; docs/strefer.md)

`--zero-pixels` (streamo, stride, etbench) streams black frames: a control for what the score owes the video.
A bad sample (malformed JSON line, missing field, unreadable video, a video too short for its record by the
training pipeline's rules) is skipped and counted: "skipped" in the metrics JSON, a summary line on the console;
nothing usable is an error.
"""

from __future__ import annotations

import argparse
import json
import os

from stvl_jax.cli_args import mesh_shape, non_negative_int, output_dir, positive_int
from stvl_jax.errors import UserError

MESH_HELP = "mesh shape data,fsdp,tensor, one may be -1 (--mesh=-1,1,2 when first); default: all devices on fsdp"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="model checkpoint (stvl convert import / training) or HF directory")
    p.add_argument("--data", required=True, help="dataset root (e.g. the synthetic set from `stvl data synth`)")
    p.add_argument("--split", default="val")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: <ckpt>/tokenizer, an HF dir itself)")
    p.add_argument("--out", required=True, help="output dir for metrics.json and plots")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="read only the first N records of the index (bad ones included)")
    p.add_argument("--mesh", type=mesh_shape, default=None, help=MESH_HELP)


def _load(args):
    import stvl_jax
    from stvl_jax.infer.cli import load_tokenizer
    from stvl_jax.sharding import ShardingError, make_mesh

    try:
        mesh = make_mesh(args.mesh)
    except ShardingError as e:  # the product of the sizes is not this machine's device count
        raise UserError(f"--mesh {','.join(map(str, args.mesh))}: {e}") from None
    model = stvl_jax.load_model(args.ckpt, mesh=mesh)
    return model, load_tokenizer(args.tokenizer, args.ckpt, "--tokenizer")


def _write_json(out_dir: str, name: str, result: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(result, f, indent=1)


def _index(path: str, limit: int | None, skips):
    """(records, their "path:line" keys) of the first `limit` records of a JSONL index; bad JSON counted."""
    from stvl_jax.eval.skips import read_jsonl

    if not os.path.isfile(path):
        raise UserError(f"evaluation file {path!r} not found")
    rows = read_jsonl(path, skips, limit)
    return [r for _, r in rows], [k for k, _ in rows]


def run_streamo(args) -> dict:
    from stvl_jax.eval.plots import plot_confusion, plot_state_timelines
    from stvl_jax.eval.skips import SkipReport
    from stvl_jax.eval.streamo_eval import evaluate_streamo, format_per_task

    path = os.path.join(args.data, "streamo", f"stream_{args.split}.jsonl")
    skips = SkipReport()
    records, keys = _index(path, args.limit, skips)
    skips.require_usable(len(records), path)
    model, tok = _load(args)
    result = evaluate_streamo(model, tok, model.preprocessing, records, os.path.dirname(path),
                              max_rounds=args.max_rounds, stop_on_first_response=args.stop_on_first_response,
                              zero_pixels=args.zero_pixels, sources=keys, skips=skips)
    skips.require_usable(len(result["streams"]), path)
    _write_json(args.out, "streamo_metrics.json", result)
    m = result["metrics"]
    plot_confusion(m, os.path.join(args.out, "streamo_confusion.png"), "Streamo states")
    plot_state_timelines(result["streams"], m["classes"], os.path.join(args.out, "streamo_timelines.png"))
    control = " with every pixel zeroed" if args.zero_pixels else ""
    print(f"streamo/{args.split}{control}: macro-F1 {m['macro_f1']:.3f} "
          f"(majority baseline {m['baseline']['macro_f1']:.3f}), "
          f"accuracy {m['accuracy']:.3f}, {m['n']} seconds over {len(result['streams'])} streams -> {args.out}")
    print(f"macro-F1 per task: {format_per_task(m)}")
    print(skips.summary(len(result["streams"])))
    return result


def run_qvh_yesno(args) -> dict:
    from stvl_jax.eval.qvh_eval import evaluate_qvh_yesno
    from stvl_jax.eval.skips import SkipReport

    path = os.path.join(args.data, "qvhighlights", f"yesno_{args.split}.jsonl")
    skips = SkipReport()
    samples, keys = _index(path, args.limit, skips)
    skips.require_usable(len(samples), path)
    model, tok = _load(args)
    result = evaluate_qvh_yesno(model, tok, model.preprocessing, samples, os.path.dirname(path),
                                batch_size=args.batch_size, max_frames=args.max_frames, sources=keys, skips=skips)
    m = result["metrics"]
    skips.require_usable(m["total"], path)
    _write_json(args.out, "qvh_yesno_metrics.json", result)
    print(f"qvh-yesno/{args.split}: accuracy {m['accuracy']:.3f} (always-Yes baseline "
          f"{m['baseline_always_yes']:.3f}), yes {m['yes_accuracy']}, no {m['no_accuracy']}, "
          f"{m['total']} questions -> {args.out}")
    print(skips.summary(m["total"]))
    return result


def _zero_pixels_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zero-pixels", action="store_true",
                   help="control run: every frame black (how much of the score comes from the video)")


def _stride_common(p: argparse.ArgumentParser) -> None:
    from stvl_jax.infer.cli import add_stream_flags

    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: <ckpt>/tokenizer)")
    p.add_argument("--out", required=True, help="output dir for <task>_metrics.json and the timelines PNG")
    p.add_argument("--limit", type=positive_int, default=None, help="stream the first N well-formed samples")
    add_stream_flags(p).add_argument("--no-fallback", action="store_true",
                                     help="no [0, t_last] answer for streams without a span")
    _zero_pixels_flag(p)


def run_stride(args) -> dict:
    """Synthetic activation task (held-out split) or ET-Bench: stream, score, print F1@0.5 beside baselines."""
    from stvl_jax.eval import stride_eval
    from stvl_jax.eval.skips import SkipReport
    from stvl_jax.infer.cli import load_args_detector, load_tokenizer, stream_config

    cfg = stream_config(args, fallback=not args.no_fallback)
    skips = SkipReport()
    if args.task == "stride":
        where = os.path.join(args.data, "stride", f"{args.split}.jsonl")
        samples = stride_eval.synthetic_samples(args.data, args.split, skips)
    else:
        tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        if unknown := [t for t in tasks if t not in stride_eval.etbench.TASKS]:
            raise UserError(f"--tasks: {unknown[0]!r} has no STRIDE metric (supported: "
                            f"{','.join(stride_eval.etbench.TASKS)})")
        where = args.anno
        samples = stride_eval.etbench_samples(args.anno, args.videos, tasks, skips)
    samples = samples[: args.limit] if args.limit else samples
    skips.require_usable(len(samples), where)
    detector = load_args_detector(args, load_tokenizer(args.tokenizer, args.ckpt, "--tokenizer"), cfg)
    result = stride_eval.evaluate(stride_eval.detector_factory(detector), samples, fps=cfg.fps,
                                  zero_pixels=args.zero_pixels, skips=skips)
    skips.require_usable(len(result["samples"]), where)
    scored = {s["record"] for s in result["samples"]}  # the baselines stream the samples the model streamed
    result["baselines"] = stride_eval.baselines(detector.stride, cfg, [s for s in samples if s["record"] in scored],
                                                fps=cfg.fps)
    _write_json(args.out, f"{args.task}_metrics.json", result)
    stride_eval.plot_samples(result["samples"], os.path.join(args.out, f"{args.task}_timelines.png"))
    control = " (every pixel zeroed)" if args.zero_pixels else ""
    for task, by_source in result["metrics"].items():
        if task == "summary":
            continue
        for source, m in by_source.items():
            base = {k: v[task][source] for k, v in result["baselines"].items()}
            print(f"{args.task}{control} {task}/{source}: F1@0.5 {m['F1@0.5']:.3f} "
                  f"(always-on {base['always_on']['F1@0.5']:.3f}, always-off {base['always_off']['F1@0.5']:.3f}, "
                  f"oracle {base['oracle']['F1@0.5']:.3f}); "
                  f"F1 mean over tIoU {m['F1']:.3f} "
                  f"(always-on {base['always_on']['F1']:.3f}, always-off {base['always_off']['F1']:.3f}); "
                  f"{m['Total']} samples")
    lat = result["latency"]
    print(f"per-chunk latency: median {lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms over {lat['chunks']} "
          f"chunks -> {args.out}")
    print(skips.summary(len(result["samples"])))
    return result


def run_etbench_score(args) -> dict:
    from stvl_jax.eval import etbench

    try:
        with open(args.predictions) as f:
            samples = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"predictions file {args.predictions!r} cannot be read as JSON ({e})") from None
    if not isinstance(samples, list):
        raise UserError(f"predictions file {args.predictions!r}: expected a JSON list of samples")
    captions = etbench.CaptionScorer(args.sentsim_model)
    try:
        result = etbench.score(samples, captions)
    finally:
        captions.close()
    print(etbench.tables(result))
    if args.json:
        _write_json(os.path.dirname(os.path.abspath(args.json)), os.path.basename(args.json), result)
        print(f"metrics -> {args.json}")
    return result


def _run_vos(args) -> dict:
    from stvl_jax.eval.vos_eval import run_vos

    return run_vos(args)


def _run_rvos(args) -> dict:
    from stvl_jax.eval.rvos_eval import run_rvos

    return run_rvos(args)


def _run_strefer(args) -> dict:
    from stvl_jax.eval.strefer_eval import run_strefer

    return run_strefer(args, *_load(args))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stvl eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    s = sub.add_parser("streamo", help="per-second state tokens at 1 FPS with a reused KV cache")
    _common(s)
    s.add_argument("--max-rounds", type=positive_int, default=120)
    s.add_argument("--stop-on-first-response", action="store_true")
    _zero_pixels_flag(s)
    s.set_defaults(func=run_streamo)
    q = sub.add_parser("qvh-yesno", help="QVHighlights timestamp Yes/No accuracy (batched generation)")
    _common(q)
    q.add_argument("--batch-size", type=positive_int, default=8)
    q.add_argument("--max-frames", type=positive_int, default=16)
    q.set_defaults(func=run_qvh_yesno)
    st = sub.add_parser("stride", help="STRIDE activation task of the synthetic set (span F1 vs baselines)")
    st.add_argument("--ckpt", required=True, help="STRIDE checkpoint")
    st.add_argument("--data", required=True, help="the synthetic set (`stvl data synth`)")
    st.add_argument("--split", default="test")
    _stride_common(st)
    st.set_defaults(func=run_stride)
    et = sub.add_parser("etbench", help="ET-Bench with a STRIDE detector (F1 over tIoU 0.1/0.3/0.5/0.7)")
    et.add_argument("--ckpt", required=True, help="STRIDE checkpoint")
    et.add_argument("--anno", required=True, help="ET-Bench annotation JSON (etbench_txt_v1.0.json)")
    et.add_argument("--videos", required=True, help="directory the annotation's video paths are relative to")
    et.add_argument("--tasks", default="tvg,epm,tal,dvc,slc")
    _stride_common(et)
    et.set_defaults(func=run_stride)
    es = sub.add_parser("etbench-score", help="ET-Bench metrics of a predictions file (samples with answers)")
    es.add_argument("predictions", help="JSON list of ET-Bench samples, each with its answer in 'a'")
    es.add_argument("--sentsim-model", default=None,
                    help="local sentence-transformers dir (all-MiniLM-L6-v2) for SentSim and the choice tasks' "
                         "similarity fallback; never downloaded (absent: not computed)")
    es.add_argument("--json", default=None, help="also write the metrics (rows and tables) to this JSON file")
    es.set_defaults(func=run_etbench_score)
    v = sub.add_parser("vos", help="SAM2 promptable video segmentation: J, F, J&F per case beside controls")
    v.add_argument("--ckpt", required=True, help="SAM2 video checkpoint")
    v.add_argument("--data", required=True, help="the synthetic set (`stvl data synth --preset vos`)")
    v.add_argument("--split", default="test")
    v.add_argument("--out", required=True, help="output dir for vos_metrics.json and plots")
    v.add_argument("--frames", type=positive_int, default=None, help="clip length (default: whole videos)")
    v.add_argument("--frame-stride", type=positive_int, default=1, help="take every K-th source frame")
    v.add_argument("--limit", type=positive_int, default=None, help="evaluate at most this many clips")
    v.add_argument("--no-controls", action="store_true", help="skip the box-copy and black-frames runs")
    v.set_defaults(func=_run_vos)
    r = sub.add_parser("rvos", help="referring video segmentation (VIRST): J, F, J&F per split / kind beside controls")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="VIRST checkpoint")
    src.add_argument("--predictions", help="score masks already predicted: a folder in the submission layout "
                     "(e.g. OUT/submission of an earlier run, or another model's)")
    r.add_argument("--data", required=True, help="dataset root (MeViS, Ref-YouTube-VOS, ReVOS, or a synthetic set "
                   "written with `stvl data synth --export rvos`)")
    r.add_argument("--format", required=True, choices=("mevis", "refytvos", "revos", "synthetic"))
    r.add_argument("--split", default=None, help="default: valid_u (mevis), valid (refytvos, revos), test (synthetic)")
    r.add_argument("--out", type=output_dir, required=True,
                   help="output dir: rvos_metrics.json, plot, submission/, sheets/")
    r.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N expressions")
    r.add_argument("--sheets", type=non_negative_int, default=4,
                   help="overlay contact sheets of the first N scored expressions")
    r.add_argument("--no-controls", action="store_true", help="skip the black-frames and other-entity controls")
    r.set_defaults(func=_run_rvos)
    sf = sub.add_parser("strefer", help="Strefer engine pairs: held-out accuracy per question family beside controls")
    sf.add_argument("--ckpt", required=True, help="checkpoint trained on the engine's output (stvl train)")
    sf.add_argument("--data", required=True, help="held-out engine output (`stvl data strefer --out DIR` on other "
                    "videos)")
    sf.add_argument("--split", default="train", help="the dataset's split (the engine writes one: train)")
    sf.add_argument("--tokenizer", default=None, help="the training tokenizer, with the <k> time tokens (default: "
                    "<ckpt>/tokenizer)")
    sf.add_argument("--out", type=output_dir, required=True, help="output dir for strefer_metrics.json")
    sf.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N clips")
    sf.add_argument("--families", default=None, help="comma-separated families (default: every text family)")
    sf.add_argument("--batch-size", type=positive_int, default=8)
    sf.add_argument("--prior", default=None, metavar="TRAIN_DATA",
                    help="also score the training set's most frequent answer per template (the training engine "
                         "output dir)")
    sf.add_argument("--mesh", type=mesh_shape, default=None, help=MESH_HELP)
    sf.add_argument("--no-controls", action="store_true", help="skip the no-frames, black-frames and other-clip runs")
    sf.set_defaults(func=_run_strefer)
    args = p.parse_args(argv)
    args.func(args)
    return 0
