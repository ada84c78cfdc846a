"""Does a caption stage make the demo's tiny Streamo model read the video?

The demo's Streamo SFT (configs/train/streamo_tiny.yaml) gives the same greedy outputs with every pixel zeroed
(research/notes/streamo_learnability.md). Vision-language models are normally aligned on captions before
instruction tuning, so this tries that, in the demo's own layout (Qwen2.5-VL tiny, one 56 x 56 image per second
behind `<Xs-Ys>` tags):
1. Caption stage: the same model and optimizer on per-second caption streams made from the synthetic ground
   truth ("red circle on the left moving right. blue square in the middle standing still." for every second),
   ordinary LM loss on every caption. Held-out (test split) caption loss and token accuracy are printed with the
   pixels and with them zeroed: a gap means the backbone now reads the frames.
2. The demo's Streamo SFT from that checkpoint, then the demo's held-out streaming evaluation and its zero-pixel
   control, plus teacher-forced state probabilities with and without the pixels (mean |dp| at state tokens).
`--caption-steps 0` runs stage 2 alone from random init (the baseline on the same streams). `--mix R` runs no
caption stage: the SFT's training index holds the Streamo streams and R copies of the caption streams, shuffled
together, so one run learns both (the focal loss weighs caption text like answer text).

    python -m research.probes.streamo_caption_pretrain --out /tmp/capbench --videos 400
    python -m research.probes.streamo_caption_pretrain --out /tmp/capbench0 --videos 400 --caption-steps 0
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

MOTION = {"move_left": "moving left", "move_right": "moving right", "stop": "standing still"}
MIN_AREA = 20  # source pixels: smaller slivers at the frame edge are not named


def caption_stream(gt: dict, video: str) -> dict:
    """Ground truth -> a Streamo-layout record: per second the frame, then every visible entity left to right
    with its third of the frame and its motion at that second."""
    names = {e["id"]: e["name"] for e in gt["entities"]}
    msgs = [{"role": "system", "content": "Describe each second."}]
    for t in range(int(gt["duration"])):
        parts = []
        for o in sorted(gt["frames"][t * gt["fps"]]["objects"], key=lambda o: o["box"][0]):
            if o["area"] < MIN_AREA:
                continue
            centre = (o["box"][0] + o["box"][2] / 2) / gt["width"]
            where = "on the left" if centre < 1 / 3 else "in the middle" if centre < 2 / 3 else "on the right"
            motion = [MOTION[a["action"]] for a in gt["actions"]
                      if a["entity"] == o["entity"] and a["action"] in MOTION and a["start"] <= t <= a["end"]]
            parts.append(f"{names[o['entity']]} {where}" + (f" {motion[0]}" if motion else ""))
        msgs += [{"role": "user", "content": f"<{t}s-{t + 1}s>\n<stream>"},
                 {"role": "assistant", "content": ". ".join(parts) + "." if parts else "Nothing."}]
    return {"messages": msgs, "videos": [video]}


def write_caption_streams(data: str, out: str) -> dict[str, str]:
    rows: dict[str, list[str]] = {}
    for name in sorted(os.listdir(os.path.join(data, "annotations"))):
        with open(os.path.join(data, "annotations", name)) as f:
            gt = json.load(f)
        video = os.path.normpath(os.path.join(data, "annotations", gt["video"]))
        rows.setdefault(gt["split"], []).append(json.dumps(caption_stream(gt, video)))
    os.makedirs(out, exist_ok=True)
    files = {split: os.path.join(out, f"{split}.jsonl") for split in rows}
    for split, lines in rows.items():
        with open(files[split], "w") as f:
            f.write("\n".join(lines) + "\n")
    return files


def train(out: str, index: str, tokenizer: str, steps: int, extra: list[str]):
    from stvl_jax.demo.streamo import TRAIN_CONFIG
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer

    overrides = [f"out_dir={out}", f"data.pipeline.index={index}", f"data.pipeline.tokenizer={tokenizer}",
                 f"steps={steps}", "logging.progress=false", "logging.tensorboard=false",
                 "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1"] + extra
    cfg = load_train_config(TRAIN_CONFIG, overrides)
    t0 = time.time()
    trainer = Trainer(cfg)
    summary = trainer.run()
    print(f"  {steps} steps in {time.time() - t0:.0f} s, final loss {summary['loss']:.4f}", flush=True)
    return trainer, cfg


def teacher_forced(model, cfg, index: str, limit_batches: int = 20):
    """Held-out batches -> {'pixels'|'zeroed': (label loss, label token accuracy)}, mean |dp| of the state
    tokens (the focal loss's `state_token_ids`) at their positions between the two."""
    import jax

    from data_pipelines.grain import make_pipeline
    from data_pipelines.grain.config import PipelineConfig
    from stvl_jax.train.batches import split_targets

    d = dict(cfg.data.pipeline, index=index, batch_size=2, worker_count=0, num_epochs=1)
    state_ids = list(cfg.loss.focal.state_token_ids)
    sums = {k: np.zeros(3) for k in ("pixels", "zeroed")}
    dps = []
    with make_pipeline(PipelineConfig.from_dict(d)) as it:
        for _, b in zip(range(limit_batches), it):
            inp, targets = split_targets(b)
            lab = targets["labels"][:, 1:]
            m = lab != -100
            probs = {}
            for name, pv in (("pixels", inp["pixel_values"]), ("zeroed", np.zeros_like(inp["pixel_values"]))):
                logp = np.asarray(jax.nn.log_softmax(model(**{**inp, "pixel_values": pv}).logits[:, :-1], -1))
                nll = -np.take_along_axis(logp, np.where(m, lab, 0)[..., None], -1)[..., 0]
                sums[name] += (nll[m].sum(), (logp.argmax(-1) == lab)[m].sum(), m.sum())
                p = np.exp(logp[np.isin(lab, state_ids)][:, state_ids])
                probs[name] = p / p.sum(-1, keepdims=True)
            if len(probs["pixels"]):
                dps.append(np.abs(probs["pixels"] - probs["zeroed"]).mean(-1))
    scores = {k: (s[0] / s[2], s[1] / s[2]) for k, s in sums.items()}
    return scores, float(np.concatenate(dps).mean()) if dps else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--caption-steps", type=int, default=250)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--mix", type=int, default=0, help="caption streams mixed into the SFT, copies (no stage 1)")
    args = ap.parse_args()
    from benchmarks.common import machine
    from data_pipelines.synthetic.generate import SynthConfig, generate_dataset
    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax.demo.streamo import evaluate, pixel_control, write_streams

    stage1 = f"{args.mix} x captions mixed in" if args.mix else f"caption stage {args.caption_steps} steps"
    print(f"# {machine()}; {args.videos} synthetic videos, {stage1}, Streamo SFT {args.sft_steps} steps", flush=True)
    data, tok = os.path.join(args.out, "synth"), os.path.join(args.out, "tokenizer")
    generate_dataset(data, SynthConfig(num_videos=args.videos))
    build_tiny_tokenizer(tok)
    streams = write_streams(data, os.path.join(args.out, "streams"))
    sft_extra, sft_index = [], streams["train"]
    if args.mix or args.caption_steps:
        captions = write_caption_streams(data, os.path.join(args.out, "captions"))
    if args.mix:
        sft_index = os.path.join(args.out, "streams", "train_mixed.jsonl")
        with open(streams["train"]) as f, open(captions["train"]) as g:
            lines = f.read().splitlines() + args.mix * g.read().splitlines()
        np.random.default_rng(0).shuffle(lines)
        with open(sft_index, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"mixed index: {len(lines)} streams ({args.mix} x the caption streams)", flush=True)
    elif args.caption_steps:
        print("caption stage:", flush=True)
        trainer, cfg = train(os.path.join(args.out, "captions_run"), captions["train"], tok, args.caption_steps,
                             ["loss.kind=lm", "data.pipeline.length_buckets=[512,768,1024]"])
        scores, _ = teacher_forced(trainer.model(), cfg, captions["test"])
        for name, (loss, acc) in scores.items():
            print(f"  held-out captions, {name}: loss {loss:.3f}, token accuracy {acc:.3f}", flush=True)
        stage1 = os.path.join(cfg.checkpoint_dir, str(args.caption_steps))
        sft_extra = ["model.config=null", f"model.checkpoint={stage1}"]
    print("Streamo SFT:", flush=True)
    trainer, cfg = train(os.path.join(args.out, "sft_run"), sft_index, tok, args.sft_steps, sft_extra)
    model = trainer.model()  # .preprocessing: what it was trained at
    _, dp = teacher_forced(model, cfg, streams["test"])
    print(f"  teacher-forced, held-out: mean |dp| of the state tokens when the pixels are zeroed {dp:.3f}")
    result = evaluate(model, tok, streams["test"], os.path.join(args.out, "eval"))
    pixel_control(model, tok, streams["test"], os.path.join(args.out, "eval"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
