"""Does a SAM2 model follow its box? Two checks on the image path (no memory), both cheap:

    score    every visible (object, frame) of N clips decoded from its exact box: mean IoU, and the mean IoU
             between the masks predicted for two objects of one frame beside that of their ground truths (a
             model that ignores the box predicts the same mask for each: ~1.0 against ~0.0)
    overfit  a model from scratch trained on ONE frame with two objects, from their boxes only: can the
             decoder tell them apart at all (the image is the same; only the box differs)?

    python -m research.probes.sam2_box_following score --ckpt runs/sam2-tiny/model --data runs/synth_vos
    python -m research.probes.sam2_box_following overfit --data runs/synth_vos --steps 300
"""

from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines.vos import VosClipConfig, VosReader
from data_pipelines.vos.prompts import box_prompt
from stvl_jax.eval.vos_metrics import region_similarity
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig, preprocess_frames
from stvl_jax.models.sam2.tracker_step import frame_features
from stvl_jax.train.sam2_loss import Sam2LossConfig
from stvl_jax.train.sam2_step import BOX_LABEL, _resize_masks, heads, image_term


def _box(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (2, 2) exact box corners in model-input pixels."""
    h, w = mask.shape
    return box_prompt(mask).reshape(2, 2) * np.asarray([size / w, size / h], np.float32)


def _decode(model, feats, k: int, box) -> jax.Array:
    """Frame k's single-mask output for one box, upsampled to the model's input size: (S, S) logits."""
    s0, s1, top, _ = feats
    pix = top[k][None] + model.image.no_memory_embedding[...].reshape(-1)
    labels = jnp.asarray([[BOX_LABEL, BOX_LABEL + 1]], jnp.int32)
    masks = heads(model, pix, (s0[k][None], s1[k][None]), box[None], labels, None, multimask=False)[0]
    size = model.config.image_size
    return jax.image.resize(masks[0], (size, size), "bilinear")


def score(args) -> None:
    from stvl_jax.infer.segment_cli import load_sam2_video

    model = load_sam2_video(args.ckpt)
    size = model.config.image_size
    feats_fn = jax.jit(lambda pix: frame_features(model, pix))
    decode = jax.jit(lambda feats, k, box: _decode(model, feats, k, box))
    reader = VosReader(args.data, args.split, VosClipConfig(num_frames=8, frame_stride=2), decode=True)
    ious, cross_pred, cross_gt = [], [], []
    for clip in itertools.islice(reader.clips(), args.clips):
        feats = feats_fn(jnp.asarray(preprocess_frames(clip.frames, model.preprocessing)))
        gts = _resize_masks(clip.masks, size)
        for k in range(clip.frames.shape[0]):
            preds = {o: np.asarray(decode(feats, k, jnp.asarray(_box(clip.masks[o, k], size)))) > 0
                     for o in range(clip.masks.shape[0]) if clip.masks[o, k].any()}
            ious += [float(region_similarity(gts[o, k], p)) for o, p in preds.items()]
            for a, b in itertools.combinations(preds, 2):
                cross_pred.append(float(region_similarity(preds[a], preds[b])))
                cross_gt.append(float(region_similarity(gts[a, k], gts[b, k])))
    print(f"{args.ckpt}: box -> mask IoU {np.mean(ious):.3f} over {len(ious)} (object, frame); IoU between two "
          f"objects of a frame: predicted {np.mean(cross_pred):.3f}, ground truth {np.mean(cross_gt):.3f}")


def _two_object_frames(data: str, split: str, size: int, n: int):
    """The first n (frame, two visible objects) of a split -> pix (n, 3, S, S), boxes (2, n, 2, 2), gt (2, n, S, S)."""
    reader = VosReader(data, split, VosClipConfig(num_frames=8, frame_stride=2), decode=True)
    pix, boxes, gts = [], [], []
    for clip in reader.clips():
        for k in range(clip.frames.shape[0]):
            objs = np.flatnonzero(clip.masks[:, k].any((1, 2)))[:2]
            if len(objs) < 2 or len(pix) >= n:
                continue
            pix.append(preprocess_frames(clip.frames[k:k + 1], Sam2PreprocessConfig(image_size=size))[0])
            boxes.append(np.stack([_box(clip.masks[o, k], size) for o in objs]))
            gts.append(_resize_masks(clip.masks[objs, k:k + 1], size)[:, 0])
        if len(pix) >= n:
            break
    return np.stack(pix), np.stack(boxes, 1), np.stack(gts, 1)


def _from_scratch(config: str, opt, pos_init: str = "zeros"):
    """A SAM2 from scratch with its box-prompted image path made trainable -> (image size, params, jitted
    step(params, opt_state, pix, boxes, gt) -> (params, opt_state, loss), jitted predict(params, pix, boxes) ->
    (2, n, S, S) bool). The Fourier matrices stay fixed, as the trainers keep them."""
    from stvl_jax.models.sam2.video_model import init_video_model
    from stvl_jax.train.sam2_config import Sam2ModelSection, resolve_model_config

    model = init_video_model(resolve_model_config(Sam2ModelSection(config=config)), seed=0)
    if pos_init == "sine":  # MAE's fixed 2-D sine table as the Hiera's starting position embedding
        from stvl_jax.models.sam2.position import sine_2d

        table = model.image.vision_encoder.backbone.pos_embed
        table[...] = jnp.asarray(sine_2d(*table[...].shape))
    trained = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("positional_embedding")))
    graph, params, rest = nnx.split(model, trained, ...)
    cfg = Sam2LossConfig()

    def loss_fn(p, x, b, g):
        m = nnx.merge(graph, p, rest)
        parts = image_term(m, frame_features(m, x), b, jnp.ones(b.shape[:2], bool), g, cfg)
        return sum(getattr(cfg, "weight_" + t) * parts["loss_" + t].sum() for t in ("mask", "dice", "iou", "class"))

    @jax.jit
    def step(p, o, x, b, g):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, b, jnp.asarray(g, jnp.float32))
        u, o = opt.update(grads, o, p)
        return optax.apply_updates(p, u), o, loss

    @jax.jit
    def predict(p, x, b):
        m = nnx.merge(graph, p, rest)
        feats = frame_features(m, x)
        return jax.vmap(lambda bo: jax.vmap(lambda k, bk: _decode(m, feats, k, bk))(jnp.arange(x.shape[0]), bo))(b) > 0

    return model.config.image_size, params, step, predict


def overfit(args) -> None:
    opt = optax.adamw(args.lr)
    size, params, step, predict = _from_scratch(args.config, opt)
    pix, boxes, gt = _two_object_frames(args.data, "train", size, 1)
    state = opt.init(params)
    print(f"two objects of one frame, areas {gt.sum((1, 2, 3)).tolist()}")
    for i in range(args.steps + 1):
        params, state, loss = step(params, state, pix, boxes, gt)
        if i % 50 == 0:
            pred = np.asarray(predict(params, pix, boxes))[:, 0]
            j = [float(region_similarity(gt[n, 0], pred[n])) for n in range(2)]
            print(f"step {i}: loss {float(loss):.3f}, IoU per object {np.round(j, 3).tolist()}, IoU between the "
                  f"two predictions {float(region_similarity(pred[0], pred[1])):.3f}", flush=True)


def pool(args) -> None:
    """Train from scratch on a pool of K two-object frames (minibatches of B): does the box-following escape the
    plateau as K grows, and does it carry to held-out frames?"""
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(args.lr, weight_decay=0.01))
    size, params, step, predict = _from_scratch(args.config, opt, args.pos_init)
    pix, boxes, gt = _two_object_frames(args.data, "train", size, args.pool)
    tpix, tboxes, tgt = _two_object_frames(args.data, "test", size, 16)

    def report(p, x, b, g):
        pred = np.asarray(predict(p, x, b))
        iou = np.mean([region_similarity(g[o, i], pred[o, i]) for o in range(2) for i in range(x.shape[0])])
        cross = np.mean([region_similarity(pred[0, i], pred[1, i]) for i in range(x.shape[0])])
        return f"IoU {iou:.3f} (two objects' masks overlap {cross:.3f})"

    rng = np.random.default_rng(0)
    state = opt.init(params)
    ev = min(16, len(pix))
    print(f"pool of {len(pix)} two-object training frames, batches of {args.batch}, lr {args.lr}", flush=True)
    for i in range(args.steps + 1):
        idx = rng.choice(len(pix), args.batch, replace=False)
        params, state, loss = step(params, state, pix[idx], boxes[:, idx], gt[:, idx])
        if i % args.every == 0:
            print(f"step {i}: loss {float(loss):.3f}; train {report(params, pix[:ev], boxes[:, :ev], gt[:, :ev])}; "
                  f"held-out {report(params, tpix, tboxes, tgt)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("score")
    a.add_argument("--ckpt", required=True)
    a.add_argument("--data", required=True)
    a.add_argument("--split", default="test")
    a.add_argument("--clips", type=int, default=8)
    b = sub.add_parser("overfit")
    b.add_argument("--data", required=True)
    b.add_argument("--config", default="sam2_tiny")
    b.add_argument("--steps", type=int, default=300)
    b.add_argument("--lr", type=float, default=1e-3)
    c = sub.add_parser("pool")
    c.add_argument("--data", required=True)
    c.add_argument("--config", default="sam2_tiny")
    c.add_argument("--pool", type=int, default=16, help="distinct training frames")
    c.add_argument("--batch", type=int, default=4)
    c.add_argument("--steps", type=int, default=400)
    c.add_argument("--every", type=int, default=100)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--pos-init", choices=("zeros", "sine"), default="zeros", help="the Hiera's position table")
    args = ap.parse_args()
    {"score": score, "overfit": overfit, "pool": pool}[args.cmd](args)


if __name__ == "__main__":
    main()
