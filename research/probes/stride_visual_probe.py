"""How strong must a visual change be before the tiny STRIDE recipe learns to read it?
(research/notes/stride_learnability.md)

Each probe is a set of 20 s videos (128 x 128, 4 fps) on a dark background in which one thing is visible during
[s, e) (2-4 s) and the query asks when ("When is it visible?"); the STRIDE windows are cut before, inside and
after the event as in the synthetic set. Probes:
  flash  — the whole frame turns bright (every visual token changes);
  block  — a red 64 x 64 px block filling one quarter of the frame, which quarter drawn per video (exactly one
           merged token of the recipe's 64 px frames);
  square — a red 24 x 24 px square at a random place per video (12 px at 64 px: about a seventh of one
           merged token, the size of the synthetic set's larger shapes).
Per probe, configs/train/stride_tiny.yaml (only the index, steps and out_dir changed) trains on 180 videos;
then held-out windows with every slot masked (mode 1) are scored with their pixels and with the pixels set to
zero: active-slot F1 and accuracy (a model that ignores the video scores the same both ways). Also printed:
what the probe changes in the (frozen, randomly initialised) vision tower's output tokens, |delta| per merged
token against the background frame pair, beside the tokens' own norm — the signal the LLM has to read.

    python -m research.probes.stride_visual_probe                            # flash, block, square; 300 steps each
    python -m research.probes.stride_visual_probe --probes square --steps 1200 --set optim.groups.vision.train=true
    python -m research.probes.stride_visual_probe --probes square --warmup-probe block   # square after block
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

import numpy as np

PROBES = ("flash", "block", "square")
SIZE, FPS, DURATION = 128, 4, 20
RECIPE = "stride_tiny"  # the packaged configs/train/stride_tiny.yaml
RED, BACKGROUND = (230, 40, 40), 24


def probe_frame(kind: str, on: bool, xy: tuple[int, int]) -> np.ndarray:
    f = np.full((SIZE, SIZE, 3), BACKGROUND, np.uint8)
    if on and kind == "flash":
        f[:] = 230
    elif on and kind == "block":
        y0, x0 = (SIZE // 2) * (xy[1] >= SIZE // 2), (SIZE // 2) * (xy[0] >= SIZE // 2)
        f[y0 : y0 + SIZE // 2, x0 : x0 + SIZE // 2] = RED
    elif on and kind == "square":
        x, y = xy
        f[y - 12 : y + 12, x - 12 : x + 12] = RED
    return f


def write_probe_set(kind: str, out: str, videos: int, seed: int = 0) -> dict[str, str]:
    """Videos + STRIDE activation samples (the synthetic set's JSONL format); every tenth video is held out."""
    from data_pipelines.synthetic.render import write_mp4

    rng = np.random.default_rng(seed)
    os.makedirs(f"{out}/videos", exist_ok=True)
    rows = {"train": [], "test": []}
    for v in range(videos):
        s = int(rng.integers(2, 14))
        e = s + int(rng.integers(2, 5))
        xy = tuple(int(c) for c in rng.integers(20, SIZE - 20, size=2))
        vid = f"{kind}_{v:04d}"
        write_mp4(f"{out}/videos/{vid}.mp4",
                  [probe_frame(kind, s <= k / FPS < e, xy) for k in range(DURATION * FPS)], FPS)
        ends = (s - 0.25, s + 1.0, min(DURATION - 0.25, e + int(rng.integers(1, 5))))
        for cut, end in zip(("before", "inside", "after"), ends):
            rows["test" if v % 10 == 0 else "train"].append({
                "id": f"{vid}_{cut}", "vid": vid, "task": "tvg", "action": "visible",
                "data": [{"type": "text", "content": "When is it visible?"},
                         {"type": "video", "path": f"videos/{vid}.mp4", "fps": FPS, "start_seconds": max(0.0, end - 15),
                          "end_seconds": end, "src_resolution": [SIZE, SIZE]},
                         {"type": "activation_output",
                          "entries": [{"start_seconds": float(s), "end_seconds": e - 0.01, "mask": True,
                                       "value": "<active>"}]}]})
    return write_splits(rows, out)


def write_splits(rows: dict[str, list[dict]], out: str) -> dict[str, str]:
    """{split: records} -> {split: path of out/<split>.jsonl}."""
    paths = {}
    for split, r in rows.items():
        paths[split] = f"{out}/{split}.jsonl"
        with open(paths[split], "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in r)
    return paths


def probe_args(doc: str, probes, warmups=None) -> argparse.Namespace:
    """The command line shared by the probe benchmarks (probes must be among `probes`, a warm-up among `warmups`,
    by default the same)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--probes", default=",".join(probes))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--out", default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--warmup-probe", default=None, metavar="PROBE",
                    help="first train the recipe on this probe (--warmup-steps); every probe starts from it")
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra overrides of the recipe config, e.g. optim.groups.vision.train=true")
    a = ap.parse_args()
    a.probes = a.probes.split(",")
    for flag, kinds, known in (("--probes", a.probes, probes),
                               ("--warmup-probe", [a.warmup_probe] if a.warmup_probe else [], warmups or probes)):
        for kind in kinds:
            if kind not in known:
                ap.error(f"{flag}: {kind!r} is not among {', '.join(known)}")
    return a


def train_probe(recipe: str, index: str, tokenizer: str, a: argparse.Namespace, run_dir: str, *extra: str,
                steps: int | None = None):
    """The recipe trained on a probe's index for `steps` (default `a.steps`; with `a.set` overrides)
    -> (trainer, config)."""
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer

    steps = steps or a.steps
    cfg = load_train_config(recipe, [f"data.pipeline.index={index}", f"data.pipeline.tokenizer={tokenizer}",
                                     f"steps={steps}", f"out_dir={run_dir}", f"checkpoint.every={steps}",
                                     "logging.every=50", *extra, *a.set])
    trainer = Trainer(cfg)
    trainer.run()
    return trainer, cfg


def warmup_start(recipe: str, write_index, tokenizer: str, a: argparse.Namespace, root: str, *extra: str) -> list[str]:
    """With `--warmup-probe P`: train the recipe on probe P first (`write_index(P, dir)` -> train index) and return
    the overrides that start a run from its checkpoint; without it, []."""
    if not a.warmup_probe:
        return []
    run_dir = f"{root}/warmup_{a.warmup_probe}/run"
    train_probe(recipe, write_index(a.warmup_probe, f"{root}/warmup_{a.warmup_probe}"), tokenizer, a, run_dir, *extra,
                steps=a.warmup_steps)
    return ["model.config=null", f"model.checkpoint={run_dir}/checkpoints/{a.warmup_steps}"]


def report(a: argparse.Namespace, root: str, results: dict, scored: str, header: str, row) -> None:
    """Print the results table (`row(kind, result)` -> line) and write root/probe_results.json."""
    warmup = f" after {a.warmup_steps} warm-up steps on {a.warmup_probe}" if a.warmup_probe else ""
    print(f"\n{a.steps} steps{warmup}, overrides {a.set or 'none'}; {scored}")
    print(header)
    for kind, r in results.items():
        print(row(kind, r))
    with open(f"{root}/probe_results.json", "w") as f:
        json.dump({"steps": a.steps, "warmup_probe": a.warmup_probe, "warmup_steps": a.warmup_steps, "overrides": a.set,
                   "results": results}, f, indent=1)
    print(f"results: {root}/probe_results.json")


def token_signal(model, kind: str, vision) -> tuple[float, float]:
    """(max over merged tokens of |delta|, mean token norm) of the vision tower's output, probe on vs off."""
    from stvl_jax.models.qwen_vl.host.preprocess import process_video
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs

    def tokens(on):
        frames = np.stack([probe_frame(kind, on, (40, 40))] * 2)
        pv, grid = process_video(frames, vision)
        x, _ = model.visual(prepare_vision_inputs(model.config, pixel_values_videos=pv,
                                                  video_grid_thw=np.asarray(grid).reshape(-1, 3)))
        return np.asarray(x)

    off, on = tokens(False), tokens(True)
    return float(np.linalg.norm(on - off, axis=-1).max()), float(np.linalg.norm(off, axis=-1).mean())


def held_out_scores(kind: str | None, ckpt: str, index: str, cfg) -> dict:
    """Active-slot F1 / accuracy over held-out windows (all slots masked), with and without the pixels; with a
    probe `kind`, also its `token_signal`."""
    from transformers import AutoTokenizer

    from data_pipelines.grain import PipelineConfig, make_pipeline
    from stvl_jax.eval.metrics import classification_report
    from stvl_jax.models.stride.head import second_copy_positions
    from stvl_jax.models.stride.model import load_stride, window_probs

    pc = PipelineConfig.from_dict({**cfg.data.pipeline, "index": index, "batch_size": cfg.data.batch_size,
                                   "num_epochs": 1, "shuffle": False, "worker_count": 0,
                                   "drop_remainder": False})
    pc = dataclasses.replace(pc, stride=dataclasses.replace(pc.stride, mask_modes=(1,)))
    model, scfg = load_stride(ckpt, AutoTokenizer.from_pretrained(pc.tokenizer), window=pc.stride.window)
    labels, probs, blind = [], [], []
    for batch in make_pipeline(pc):
        pos = second_copy_positions(batch["input_ids"], scfg)
        lab = np.take_along_axis(batch["activation_labels"], pos, 1)
        zeroed = dict(batch, pixel_values_videos=np.zeros_like(batch["pixel_values_videos"]))
        keep = lab >= 0
        labels.append(lab[keep])
        probs.append(window_probs(model, scfg, batch)[keep])
        blind.append(window_probs(model, scfg, zeroed)[keep])
    y = np.concatenate(labels).astype(bool)
    names = np.array(["inactive", "active"])

    def scores(p):
        r = classification_report(names[y.astype(int)], names[(np.concatenate(p) > 0.5).astype(int)], names)
        return {"f1": r["per_class"]["active"]["f1"], "acc": r["accuracy"]}

    out = {"slots": int(y.size), "active_frac": float(y.mean()), "pixels": scores(probs), "zeroed": scores(blind),
           "all_inactive_acc": float(1 - y.mean())}
    if kind is not None:
        out["token_delta"], out["token_norm"] = token_signal(model, kind, pc.preprocess)
    return out


def main() -> int:
    a = probe_args(__doc__, PROBES)
    from data_pipelines.tokenizer import build_tiny_tokenizer

    root = a.out or tempfile.mkdtemp(prefix="stride_probe_")
    tokenizer = build_tiny_tokenizer(f"{root}/tokenizer")
    start = warmup_start(RECIPE, lambda kind, out: write_probe_set(kind, out, a.videos)["train"], tokenizer, a, root)
    results = {}
    for kind in a.probes:
        paths = write_probe_set(kind, f"{root}/{kind}", a.videos)
        _, cfg = train_probe(RECIPE, paths["train"], tokenizer, a, f"{root}/{kind}/run", *start)
        results[kind] = held_out_scores(kind, f"{root}/{kind}/run/checkpoints/{a.steps}", paths["test"], cfg)
        print(kind, json.dumps(results[kind]), flush=True)
    report(a, root, results, "held-out windows, every slot masked",
           f"{'probe':<8} {'|dtoken|/|token|':>16} {'F1 pixels':>10} {'F1 zeroed':>10} {'acc pixels':>11} "
           f"{'acc zeroed':>11} {'all-inactive':>13}",
           lambda kind, r: f"{kind:<8} {r['token_delta']:>7.3f}/{r['token_norm']:<8.3f} {r['pixels']['f1']:>10.3f} "
                           f"{r['zeroed']['f1']:>10.3f} {r['pixels']['acc']:>11.3f} {r['zeroed']['acc']:>11.3f} "
                           f"{r['all_inactive_acc']:>13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
