"""Does a trained SAM2 use its box prompt? Per held-out object: IoU on the prompted frame (one exact box, no
memory) from the tracker and from the training forward (`sam2_step.object_pass`, which must agree), the
predicted area beside the ground truth's (a model that ignores the box predicts the same mask for every object of
a frame), and the mean IoU by frame offset from the prompt.

    python -m research.probes.sam2_prompted_frame --ckpt runs/sam2-tiny/model --data runs/synth_vos --clips 12
"""

from __future__ import annotations

import argparse
import itertools

import jax.numpy as jnp
import numpy as np

from data_pipelines.vos import VosClipConfig, VosReader, clip_arrays, first_frame_box_prompts
from stvl_jax.eval.vos_eval import sam2_segmenter
from stvl_jax.eval.vos_metrics import region_similarity
from stvl_jax.infer.segment_cli import load_sam2_video
from stvl_jax.models.sam2.position import sine_2d
from stvl_jax.models.sam2.postprocess import masks_from_logits
from stvl_jax.models.sam2.tracker_step import frame_features
from stvl_jax.train.sam2_loss import Sam2LossConfig
from stvl_jax.train.sam2_step import clip_batch, object_pass

KEYS = ("gt", "cond", "points", "labels", "mask_inputs", "has_mask", "order", "active")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--clips", type=int, default=12)
    args = ap.parse_args()

    model = load_sam2_video(args.ckpt)
    cfg = model.config
    e, m = cfg.embedding_size, cfg.memory_bank.mem_dim
    pos_table = jnp.asarray(sine_2d(e, e, m).reshape(e * e, m), jnp.float32)
    reader = VosReader(args.data, args.split, VosClipConfig(num_frames=8, frame_stride=2), decode=True)
    segment = sam2_segmenter(model)
    by_offset: dict[int, list[float]] = {}
    prompted, agree = [], []
    for clip in itertools.islice(reader.clips(), args.clips):
        prompts = first_frame_box_prompts(clip)
        tracked = segment(clip, prompts)
        batch = clip_batch([clip_arrays(clip, prompts)], model.preprocessing)
        feats = frame_features(model, jnp.asarray(batch["pixel_values"][0]))
        h, w = clip.masks.shape[2:]
        for p in prompts:
            obj = {k: jnp.asarray(batch[k][0, p.object]) for k in KEYS}
            _, lows = object_pass(model, feats, pos_table, obj, Sam2LossConfig(), cond_capacity=2, clicks=False,
                                  mask_prompts=False)
            train_fwd = np.asarray(masks_from_logits(lows[p.frame][None], cfg.image_size, h, w, 0.0))[0]
            gt, pred = clip.masks[p.object], tracked[p.object]
            j = float(region_similarity(gt[p.frame], pred[p.frame]))
            prompted.append((j, int(gt[p.frame].sum()), int(pred[p.frame].sum())))
            agree.append(bool((train_fwd == pred[p.frame]).all()))
            for k in range(p.frame + 1, gt.shape[0]):
                if gt[k].any() or pred[k].any():
                    by_offset.setdefault(k - p.frame, []).append(float(region_similarity(gt[k], pred[k])))
    ious = np.array([x[0] for x in prompted])
    print(f"prompted frame: mean IoU {ious.mean():.3f} over {len(ious)} objects; training forward == tracker on "
          f"{sum(agree)}/{len(agree)}")
    print("  (IoU, gt area, predicted area) of the first 12:", [(round(a, 2), g, q) for a, g, q in prompted[:12]])
    print("tracked frames, mean IoU by offset from the prompt:",
          {k: round(float(np.mean(v)), 3) for k, v in sorted(by_offset.items())})


if __name__ == "__main__":
    main()
