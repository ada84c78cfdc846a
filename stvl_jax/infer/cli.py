"""`stvl stream VIDEO --query "..." --ckpt STRIDE_CKPT`: proactive streaming inference on a video file.

    stvl stream runs/demo/synth/videos/synth_00009.mp4 --query "When does the red circle stop moving?" \\
        --ckpt runs/stride-tiny/checkpoints/700 --tokenizer runs/demo/tokenizer --chunk 2 --max-window 16 \\
        --answerer ckpt/qwen3vl --answerer-tokenizer ckpt/qwen3vl/tokenizer --out runs/stream

Frames are read at --fps (1) as the released STRIDE evaluation reads them (frame round(k * video fps / fps), its
decoded timestamp as its stream time: the frames `stvl eval stride` streams); STRIDE denoises its activation
window every --chunk frames; each completed span is a trigger, on which the frozen --answerer (any Qwen-VL
checkpoint) answers from the frames so far (with their times). Prints the timeline (slots per chunk, spans,
triggers, answers, per-chunk latency) and writes <out>/timeline.png and <out>/stream.json. Ground truth (--gt S-E,
or found automatically for videos of `stvl data synth` whose STRIDE samples hold this query) is drawn on the PNG.

Window settings and fps default to what the checkpoint recorded (STRIDE training writes them into its
stvl_config.json; an imported STRIDE config.json has the window), else the reference's (256 slots of 1 s, 1 fps);
frames are prepared with the checkpoint's preprocessing (`--max-pixels` overrides its per-frame bound).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from stvl_jax.cli_args import non_negative_float, positive_float, positive_int, probability
from stvl_jax.errors import InputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stvl stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file")
    p.add_argument("--query", required=True, help="what to watch for")
    p.add_argument("--ckpt", required=True, help="STRIDE checkpoint (training step, import, or HF dir)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default <ckpt>/tokenizer)")
    p.add_argument("--answerer", default=None, help="downstream Qwen-VL checkpoint (omit: triggers only)")
    p.add_argument("--answerer-tokenizer", default=None, help="its tokenizer (default <answerer>/tokenizer)")
    p.add_argument("--max-answer-tokens", type=positive_int, default=48)
    p.add_argument("--answer-frames", type=positive_int, default=16, help="frames shown to the answerer (even)")
    g = add_stream_flags(p)
    g.add_argument("--margin", type=non_negative_float, default=1.0)
    g.add_argument("--multi-event", action="store_true", help="keep triggering (dvc/tal-style tasks)")
    g.add_argument("--max-triggers", type=positive_int, default=50)
    g.add_argument("--cache", choices=("mega", "chunk", "none"), default="mega")
    p.add_argument("--gt", default=None, help="ground-truth span(s) 'S-E[,S-E...]' in seconds for the PNG")
    p.add_argument("--out", default="stream_out", help="output dir (timeline.png, stream.json)")
    return p


def add_stream_flags(p: argparse.ArgumentParser):
    """The detector's flags shared by `stvl stream` and `stvl eval stride|etbench`; returns the stream group."""
    g = p.add_argument_group("stream (defaults: the reference's)")
    g.add_argument("--fps", type=positive_float, default=None,
                   help="frames per second read from the video (default: the STRIDE training clips' rate recorded "
                        "with the checkpoint, else 1)")
    g.add_argument("--chunk", type=positive_int, default=32, help="new frames per step (even)")
    g.add_argument("--max-window", type=positive_int, default=128, help="frames in a mega-window (even)")
    g.add_argument("--stride", type=positive_int, default=None,
                   help="frames a full mega-window advances (default --chunk)")
    g.add_argument("--steps", type=positive_int, default=8)
    g.add_argument("--confidence", type=probability, default=0.75, help="retain threshold (0 disables retain)")
    g.add_argument("--positions", choices=("correct", "reference"), default="correct",
                   help="slot position ids: continue the cropped prefix, or the reference's cached rope_deltas")
    g.add_argument("--seed", type=int, default=0)
    w = p.add_argument_group("window / processor (default: recorded with the checkpoint)")
    w.add_argument("--window", type=positive_int, default=None, help="slots (trigger_window_past)")
    w.add_argument("--resolution", type=positive_float, default=None, help="seconds per slot")
    w.add_argument("--max-pixels", type=positive_int, default=None, help="pixels per resized frame")
    return g


def stream_config(args, **fields):
    """StreamConfig from the `add_stream_flags` flags plus caller-specific `fields` (fps: the flag, else what the
    checkpoint recorded, else 1)."""
    from stvl_jax.infer.stride_runtime import StreamConfig
    from stvl_jax.models.stride.config import recorded_settings

    fps = args.fps or recorded_settings(args.ckpt)["fps"] or 1.0
    return StreamConfig(fps=fps, chunk_size=args.chunk, max_window=args.max_window,
                        stride=args.stride or args.chunk, steps=args.steps, confidence=args.confidence or None,
                        positions=args.positions, seed=args.seed, **fields)


def load_args_detector(args, tokenizer, cfg):
    """The detector for `args.ckpt` with the window/processor flags."""
    from stvl_jax.infer.stride_runtime import load_detector

    return load_detector(args.ckpt, tokenizer, cfg, window=args.window, resolution=args.resolution,
                         max_pixels=args.max_pixels)


def parse_gt(text: str | None) -> list[tuple[float, float]]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        try:
            s, e = (float(x) for x in part.split("-"))
        except ValueError:
            raise InputError(f"--gt {text!r}: expected 'S-E[,S-E...]' in seconds") from None
        if e < s:
            raise InputError(f"--gt {part!r}: end before start")
        out.append((s, e))
    return out


def synthetic_gt(video: str, query: str) -> list[tuple[float, float]]:
    """The target span of a `stvl data synth` video's STRIDE sample with this exact query, if any."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(video)))
    vid = os.path.splitext(os.path.basename(video))[0]
    for split in ("train", "val", "test"):
        path = os.path.join(root, "stride", f"{split}.jsonl")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("vid") == vid and rec["data"][0].get("content") == query:
                    e = next(x for x in rec["data"][2]["entries"] if x["value"] == "<active>")
                    return [(float(e["start_seconds"]), float(e["end_seconds"]))]
    return []


def load_tokenizer(path: str | None, ckpt: str, flag: str):
    from data_pipelines.tokenizer import open_tokenizer
    from stvl_jax.models.qwen_vl.checkpoints import tokenizer_dir

    return open_tokenizer(path or tokenizer_dir(ckpt), flag)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from data_pipelines.video import read_stream, stat_video_file
    from stvl_jax.infer.stride_assistant import Answer, Answerer, ProactiveAssistant
    from stvl_jax.infer.stride_timeline import format_timeline, latency_summary, plot_timeline

    stat_video_file(args.video)  # missing, a directory, a FIFO, empty: one line before the model loads

    tok = load_tokenizer(args.tokenizer, args.ckpt, "--tokenizer")
    cfg = stream_config(args, margin=args.margin, multi_event=args.multi_event, max_triggers=args.max_triggers,
                        cache=args.cache)
    detector = load_args_detector(args, tok, cfg)
    window = detector.stride
    answerer = None
    if args.answerer:
        import stvl_jax

        answerer = Answerer(stvl_jax.load_model(args.answerer),
                            load_tokenizer(args.answerer_tokenizer, args.answerer, "--answerer-tokenizer"),
                            max_frames=args.answer_frames, max_new_tokens=args.max_answer_tokens)
    clip = read_stream(args.video, cfg.fps)  # the released STRIDE evaluation's frames and decoded times
    frames = clip.frames
    print(f"{args.video}: {len(frames)} frames at {cfg.fps:g} fps; window {window.window} slots x "
          f"{window.resolution:g} s; query {args.query!r}", flush=True)

    def show(ev):
        if isinstance(ev, Answer):
            print(f"  ANSWER at {ev.time:.1f}s ({ev.frames} frames, {1000 * ev.latency_s:.0f} ms): {ev.text!r}",
                  flush=True)
        else:
            print(f"  t={ev.t_last:6.1f}s  {1000 * ev.latency_s:7.1f} ms  span "
                  f"{'-' if ev.span is None else f'{ev.span[0]:.1f}-{ev.span[1]:.1f}s'}"
                  + "".join(f"  TRIGGER {g.start:.1f}-{g.end:.1f}s" for g in ev.triggers), flush=True)

    result, answers = ProactiveAssistant(detector, answerer).run(frames, args.query, on_event=show, times=clip.times)
    gt = parse_gt(args.gt) or synthetic_gt(args.video, args.query)
    os.makedirs(args.out, exist_ok=True)
    png = plot_timeline(result, os.path.join(args.out, "timeline.png"), resolution=window.resolution, gt=gt,
                        answers=answers, title=f"{os.path.basename(args.video)}: {args.query}")
    print(format_timeline(result, answers, gt))
    record = {"video": args.video, "query": args.query, "ground_truth": gt, "latency": latency_summary(result),
              "segments": [vars(g) for g in result.segments], "answers": [vars(a) for a in answers],
              "chunks": [{"t_last": c.t_last, "labels": c.labels.tolist(), "span": c.span, "forwards": c.forwards,
                          "latency_ms": 1000 * c.latency_s, "prefix_built": c.prefix_built} for c in result.chunks]}
    with open(os.path.join(args.out, "stream.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {png} and {os.path.join(args.out, 'stream.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
