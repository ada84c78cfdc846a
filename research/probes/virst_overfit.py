"""Can the tiny VIRST overfit ONE fixed batch's masks? (research/notes/virst_learnability.md)

    python -m research.probes.virst_overfit --data DIR --steps 100 [KEY=VALUE ...]

Builds `VirstTrainer` from configs/train/virst_tiny.yaml with the given overrides (e.g. data.batch_size=1
data.vlm_frames=4 data.anchors=uniform model.sam2_checkpoint=...), draws its first batch once and trains on
that batch only with the trainer's optimizer and loss. Every `--every` steps it prints the loss terms and, per
frame of each row, the object-score logit (the masks are gated to NO_OBJ_SCORE where it is <= 0, which stops
their gradient), the predicted and true mask areas and the hard Dice of the predicted mask (logits > 0) against
the target; the gradient norm of each module (what reaches the SegPrompter, the SAM2 mask decoder, the LLM)
after the first and the last step; the norms of the decoded prompts beside SAM2's own click embedding (the scale
its mask decoder was built for). At the end the same frames are decoded as the evaluation does (its anchors,
its multimask choice): what `stvl eval rvos` would score on that clip.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import optax


def module_of(path: str) -> str:
    parts = path.split("/")
    depth = 3 if parts[0] == "sam2" and len(parts) > 3 and parts[1] == "image" else 2
    return "/".join(parts[:depth])


def grad_norms(grads: dict) -> dict[str, float]:
    sq = defaultdict(float)
    for k, g in grads.items():
        sq[module_of(k)] += float(np.sum(np.square(np.asarray(g, np.float64))))
    return {k: v ** 0.5 for k, v in sorted(sq.items())}


def make_view(merge, template, anchors, multimask: bool):
    """Jitted (params, frozen, one row) -> (low-res logits (T, h, w), object scores (T,), |prompt|, |seg hidden|)
    of the forward with these anchors (None: the evaluation rule) and this decoding."""
    from stvl_jax.models.qwen_vl.inputs import ModelInputs

    template = jax.tree.map(jnp.asarray, template)

    @jax.jit
    def view(params, frozen, pv, ids, mask, pos, pix):
        vision = dataclasses.replace(template, pixel_values=pv)
        inputs = ModelInputs(ids[None], mask[None], pos[:, None], vision)
        o = merge(params, frozen).forward(inputs, pix, track=True, multimask=multimask, anchors=anchors)
        return (o.tracking.low_res_logits[0], o.tracking.object_score_logits[0],
                jnp.linalg.norm(o.anchor_prompts, axis=-1).mean(), jnp.linalg.norm(o.seg_hidden, axis=-1).mean())

    return view


def report(name: str, step: int, view, params, frozen, batch) -> float:
    dices = []
    for r in range(len(batch["input_ids"])):
        low, obj, pn, hn = view(params, frozen, *(jnp.asarray(batch[k][r]) for k in (
            "pixel_values_videos", "input_ids", "attention_mask", "position_ids", "sam2_pixel_values")))
        gt = np.asarray(batch["masks"][r])
        up = np.asarray(jax.image.resize(low, gt.shape, method="bilinear", antialias=False)) > 0
        dice = 2 * (up & gt).sum((1, 2)) / np.maximum(up.sum((1, 2)) + gt.sum((1, 2)), 1)
        dice = np.where((up.sum((1, 2)) + gt.sum((1, 2))) == 0, 1.0, dice)
        dices.append(dice.mean())
        print(f"  {name} step {step} row {r}: obj {np.round(np.asarray(obj), 1).tolist()} dice "
              f"{np.round(dice, 2).tolist()} pred_area {np.round(up.mean((1, 2)), 3).tolist()} gt_area "
              f"{np.round(gt.mean((1, 2)), 3).tolist()} |prompt| {float(pn):.1f} |seg_hidden| {float(hn):.1f}")
    return float(np.mean(dices))


def click_norm(model) -> float:
    """Norm of SAM2's sparse embedding of one positive click at the image centre (and its padding token)."""
    s = model.sam2.config.image_size
    pts = jnp.full((1, 1, 1, 2), s / 2, jnp.float32)
    sparse, _ = model.sam2.image.prompt_encoder(pts, jnp.ones((1, 1, 1), jnp.int32), None, None, batch_size=1)
    return float(np.linalg.norm(np.asarray(sparse), axis=-1).mean())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--config", default="configs/train/virst_tiny.yaml")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    from stvl_jax.train.virst_config import load_virst_train_config
    from stvl_jax.train.virst_step import batch_loss, forward_anchors
    from stvl_jax.train.virst_trainer import VirstTrainer

    cfg = load_virst_train_config(args.config, [f"data.dir={args.data}", f"out_dir={tempfile.mkdtemp()}",
                                                f"steps={args.steps}", *args.overrides])
    tr = VirstTrainer(cfg)
    batch = tr.batch(0)
    batch["dropout_key"][:] = 0  # one fixed batch, dropout keys too
    print(f"{len(batch['input_ids'])} expressions x {batch['masks'].shape[1]} frames; SAM2 click-prompt norm "
          f"{click_norm(tr.model()):.1f}")
    tx, merge, template, loss_cfg, rule = tr.tx, tr.merge, tr.template, cfg.loss, cfg.data.anchors
    train_view = make_view(merge, template, forward_anchors(batch["masks"].shape[1], rule), False)

    @jax.jit
    def step(params, frozen, opt_state, batch):
        def objective(ps):
            return batch_loss(merge(ps, frozen), batch, template, loss_cfg, rule)

        (_, parts), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, parts, grads

    params, frozen, opt = tr.params, tr.frozen, tr.opt_state
    dev_batch = jax.tree.map(jnp.asarray, batch)
    t0 = time.perf_counter()
    for i in range(args.steps):
        if i % args.every == 0:
            report("train", i, train_view, params, frozen, batch)
        params, opt, parts, grads = step(params, frozen, opt, dev_batch)
        if i % args.every == 0 or i == args.steps - 1:
            print(f"step {i + 1} ({time.perf_counter() - t0:.0f} s):",
                  {k: round(float(v), 4) for k, v in parts.items()})
        if i in (0, args.steps - 1):
            print("  grad norms:", {k: f"{v:.1e}" for k, v in grad_norms(jax.device_get(grads)).items()})
    train_dice = report("train", args.steps, train_view, params, frozen, batch)
    eval_view = make_view(merge, template, None, tr.model_config.anchors.multimask_eval)
    eval_dice = report("eval-decoding", args.steps, eval_view, params, frozen, batch)
    print(f"mean hard dice after {args.steps} steps: training forward {train_dice:.3f}, evaluation decoding "
          f"{eval_dice:.3f}")
    tr.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
