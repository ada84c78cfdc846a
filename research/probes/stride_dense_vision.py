"""Does a vision tower pre-trained on the synthetic set's ground truth make the tiny STRIDE recipe read the video?

research/notes/stride_learnability.md traced the recipe's missed F1 target to random vision features. This tests
the remedy it proposed, in two stages on a synthetic set (`stvl data synth`):
1. Dense vision pre-training: the tiny model's vision tower, merger and DeepStack merger learn, per merged token
   of a temporal patch (two frames 1 s apart, the recipe's 64 px frames), for each of the 8 palette colours:
   present in the first frame, present in the second, moved left, moved right (> 3 source px between them).
   Targets come from the per-frame RLE masks (a colour is present in a token when >= 30 source px of its mask
   fall inside). Colours are unique within a synthetic video, so these 32 bits are what a query needs.
   Held-out (val split) F1 of the presence and motion bits is printed.
2. configs/train/stride_tiny.yaml from that checkpoint (`model.checkpoint`; vision and merger stay frozen as in
   the recipe), then held-out test windows with every slot masked, scored with the pixels and with the pixels
   zeroed (benchmarks/stride_visual_probe.py's scoring): equal scores mean the video is not read.

    python -m research.probes.stride_dense_vision --data data/synth --tokenizer data/tokenizer
    python -m research.probes.stride_dense_vision --data data/synth --tokenizer data/tokenizer --steps 3600
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

RECIPE = "stride_tiny"  # the packaged configs/train/stride_tiny.yaml
MIN_PIXELS_IN_TOKEN = 30  # source pixels of an entity's mask inside a token's area for "present"
MOVE_PX = 3.0  # source pixels of horizontal centre shift between the two frames for "moved"


def frame_targets(gt: dict, k: int, size: tuple[int, int], token_px: int, colors: list[str]):
    """Source frame k -> ((tokens, C) presence bits, (C,) mask centre x in source px, nan when absent)."""
    from data_pipelines.rle import rle_decode

    sy, sx = gt["height"] / size[0], gt["width"] / size[1]
    th, tw = size[0] // token_px, size[1] // token_px
    present = np.zeros((th * tw, len(colors)), np.float32)
    centre = np.full(len(colors), np.nan, np.float32)
    color_of = {e["id"]: e["color"] for e in gt["entities"]}
    for obj in gt["frames"][k]["objects"]:
        mask = rle_decode(obj["rle"])
        c = colors.index(color_of[obj["entity"]])
        xs = np.nonzero(mask)[1]
        if xs.size:
            centre[c] = xs.mean()
        for t in range(th * tw):
            y0, x0 = (t // tw) * token_px, (t % tw) * token_px
            area = mask[int(y0 * sy):int((y0 + token_px) * sy), int(x0 * sx):int((x0 + token_px) * sx)]
            present[t, c] = float(area.sum() >= MIN_PIXELS_IN_TOKEN)
    return present, centre


def pair_targets(a, b) -> np.ndarray:
    """Targets of a temporal patch (frames a, b) -> (tokens, 4C): present in a, in b, moved left, moved right."""
    (pa, ca), (pb, cb) = a, b
    shift = np.nan_to_num(cb - ca)
    here = np.maximum(pa, pb)
    return np.concatenate([pa, pb, here * (shift < -MOVE_PX), here * (shift > MOVE_PX)], -1).astype(np.float32)


def load_split(data: str, split: str, vision, limit: int | None = None) -> list[tuple]:
    """[(frames (N, h, w, 3) uint8 resized, per-frame targets, fps)] of one split's videos (every frame)."""
    import glob

    from stvl_jax.models.qwen_vl.host.preprocess import resize_frames, video_size
    from data_pipelines.synthetic.vocabulary import PALETTE
    from data_pipelines.video import decode_frames

    token_px = vision.patch_size * vision.merge_size
    out = []
    for path in sorted(glob.glob(os.path.join(data, "annotations", "*.json"))):
        with open(path) as f:
            gt = json.load(f)
        if gt["split"] != split:
            continue
        frames = decode_frames(os.path.normpath(os.path.join(data, "annotations", gt["video"])),
                               np.arange(gt["num_frames"]))
        size = video_size(len(frames), frames.shape[1], frames.shape[2], vision)
        targets = [frame_targets(gt, k, size, token_px, list(PALETTE)) for k in range(len(frames))]
        out.append((resize_frames(frames, size), targets, int(round(gt["fps"]))))
        if limit and len(out) >= limit:
            break
    if not out:
        raise SystemExit(f"--data {data}: no {split} videos with annotations")
    return out


def sample_pairs(videos, rng, n: int):
    """n temporal patches (frames k, k + 1 s) -> frames (2n, h, w, 3), targets (n * tokens, 4C)."""
    frames, targets = [], []
    for _ in range(n):
        clip, tg, fps = videos[rng.integers(len(videos))]
        k = int(rng.integers(len(clip) - fps))
        frames += [clip[k], clip[k + fps]]
        targets.append(pair_targets(tg[k], tg[k + fps]))
    return np.stack(frames), np.concatenate(targets)


def pretrain_vision(config, vision, train, val, steps: int, batch: int, lr: float, seed: int):
    """Train visual/* (tower, merger, DeepStack mergers) with linear heads on the pair targets.
    Returns (model with the trained tower, {presence_f1, motion_f1} on `val`)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from stvl_jax.models.qwen_vl.host.preprocess import process_video
    from data_pipelines.synthetic.vocabulary import PALETTE
    from stvl_jax.eval.metrics import classification_report
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs

    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(seed))
    n_out = 4 * len(PALETTE)
    heads = nnx.List([nnx.Linear(config.vision.out_hidden_size, n_out, rngs=nnx.Rngs(seed + 1 + i))
                      for i in range(1 + len(config.vision.deepstack_visual_indexes))])
    (vis_def, heads_def), params = zip(*(nnx.split(m) for m in (model.visual, heads)))
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 50, steps), weight_decay=0.0))

    def inputs(frames):
        pv, grid = process_video(frames, vision, dtype=np.uint8)
        return prepare_vision_inputs(config, pixel_values_videos=pv, video_grid_thw=grid)

    def logits(params, vin):
        tokens, deepstack = nnx.merge(vis_def, params[0])(vin)
        return [h(x) for h, x in zip(nnx.merge(heads_def, params[1]), [tokens, *deepstack])]

    def loss_fn(params, vin, y):
        weight = 1.0 + 4.0 * y  # positives are rare (most tokens hold nothing)
        return sum((optax.sigmoid_binary_cross_entropy(z, y) * weight).mean() for z in logits(params, vin))

    @jax.jit
    def step(params, opt_state, vin, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, vin, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = list(params)
    opt_state, rng = tx.init(params), np.random.default_rng(seed)
    t0 = time.perf_counter()
    for i in range(steps):
        frames, y = sample_pairs(train, rng, batch)
        params, opt_state, loss = step(params, opt_state, inputs(frames), jnp.asarray(y))
        if i % 500 == 0 or i == steps - 1:
            print(f"vision step {i}: loss {float(loss):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    nnx.update(model.visual, params[0])

    predict = jax.jit(lambda p, v: logits(p, v)[0])
    eval_rng, pred, true = np.random.default_rng(seed + 1000), [], []
    for _ in range(16):
        frames, y = sample_pairs(val, eval_rng, batch)
        pred.append(np.asarray(predict(params, inputs(frames))) > 0)
        true.append(y > 0)
    pred, true = np.concatenate(pred), np.concatenate(true)
    half, names = n_out // 2, np.array(["off", "on"])

    def f1(p, t):  # F1 of the "on" bits, pooled over tokens and colours
        return classification_report(names[t.ravel().astype(int)], names[p.ravel().astype(int)], names)[
            "per_class"]["on"]["f1"]

    return model, {"presence_f1": f1(pred[:, :half], true[:, :half]), "motion_f1": f1(pred[:, half:], true[:, half:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="synthetic set (stvl data synth) with stride/{train,test}.jsonl")
    ap.add_argument("--tokenizer", required=True, help="tiny tokenizer directory (stvl data tokenizer)")
    ap.add_argument("--out", default="runs/stride-dense-vision")
    ap.add_argument("--vision-steps", type=int, default=2000)
    ap.add_argument("--vision-batch", type=int, default=64, help="temporal patches per vision step")
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=1200, help="STRIDE recipe steps")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from research.probes.stride_visual_probe import held_out_scores

    from data_pipelines.grain import PipelineConfig
    from stvl_jax.models.qwen_vl.loading import save_model
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.init import model_config
    from stvl_jax.train.trainer import Trainer

    def recipe(**extra):
        over = {"data.pipeline.index": f"{a.data}/stride/train.jsonl", "data.pipeline.tokenizer": a.tokenizer,
                "steps": a.steps, "out_dir": f"{a.out}/stride", "checkpoint.every": a.steps, "logging.every": 100,
                **extra}
        return load_train_config(RECIPE, [f"{k}={v}" for k, v in over.items()])

    cfg = recipe()
    vision = PipelineConfig.from_dict({**cfg.data.pipeline, "batch_size": 1}).preprocess
    t0 = time.perf_counter()
    train, val = load_split(a.data, "train", vision), load_split(a.data, "val", vision, limit=30)
    print(f"decoded {len(train)} train / {len(val)} val videos in {time.perf_counter() - t0:.0f} s", flush=True)
    model, vision_scores = pretrain_vision(model_config(cfg.model), vision, train, val, a.vision_steps,
                                           a.vision_batch, a.vision_lr, a.seed)
    print("held-out vision targets:", json.dumps(vision_scores), flush=True)
    ckpt = save_model(model, None, f"{a.out}/vision", overwrite=True)

    cfg = recipe(**{"model.config": "null", "model.checkpoint": ckpt})
    Trainer(cfg).run()
    scores = held_out_scores(None, f"{a.out}/stride/checkpoints/{a.steps}", f"{a.data}/stride/test.jsonl", cfg)
    print(f"\nvision pre-training {a.vision_steps} steps: held-out presence F1 {vision_scores['presence_f1']:.3f}, "
          f"motion F1 {vision_scores['motion_f1']:.3f}")
    print(f"STRIDE recipe {a.steps} steps from it, held-out windows (every slot masked, {scores['slots']} slots): "
          f"active-slot F1 with pixels {scores['pixels']['f1']:.3f}, pixels zeroed {scores['zeroed']['f1']:.3f}; "
          f"accuracy {scores['pixels']['acc']:.3f} / {scores['zeroed']['acc']:.3f} "
          f"(all-inactive {scores['all_inactive_acc']:.3f})")
    with open(f"{a.out}/dense_vision_results.json", "w") as f:
        json.dump({"vision": vision_scores, "stride": scores, "args": vars(a)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
