"""Closed loop: a SAM2 video checkpoint of ours, exported with `stvl convert export`, loaded by transformers'
`Sam2VideoModel.from_pretrained(DIR)`, segments held-out clips as our tracker does.

For each clip of a synthetic VOS split, both sides get the frames through the checkpoint's preprocessing (the
project's bit-exact copy of transformers' SAM2 video processor, which does not load without torchvision) and one
box per object on its first visible frame (`stvl eval vos`'s protocol), propagate forward, and turn their own
low-res logits into masks at the video's resolution with the same post-processing. Printed: per-frame mask IoU
between the two (an object empty on both sides counts 1.0) - min, mean and the share >= 0.99 - and each side's
J&F against the ground truth, beside the box-copy baseline.

    stvl bench sam2_closed_loop --ckpt runs/sam2-tiny/model --data data/synth_vos --split test [--limit 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import numpy as np

IOU_TARGET = 0.99


def frame_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per (object, frame) IoU of two (O, T, H, W) bool mask stacks; 1.0 where both are empty."""
    inter = (a & b).sum(axis=(2, 3))
    union = (a | b).sum(axis=(2, 3))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def hf_segmenter(hf_model, model):
    """transformers' tracker as a `vos_eval.Segmenter`, prompted and post-processed as `sam2_segmenter` is."""

    from converters.sam2_verify_video import hf_track
    from stvl_jax.infer.segment_prompts import Prompt as BoxPrompt
    from stvl_jax.infer.segment_prompts import encode_prompts
    from stvl_jax.models.sam2.host.preprocess import preprocess_frames
    from stvl_jax.models.sam2.postprocess import masks_from_logits

    size = model.config.image_size

    def run(clip, prompts) -> np.ndarray:
        t, h, w = clip.frames.shape[:3]
        boxes = [BoxPrompt("box", tuple(float(v) for v in p.box), p.frame, p.object + 1) for p in prompts]
        encoded = encode_prompts(boxes, h, w, size)
        steps = [(frame, obj, "box", p.box.tolist(), None) for (frame, obj), p in sorted(encoded.items())]
        pixels = preprocess_frames(clip.frames, model.preprocessing)
        ids = sorted({obj for _, obj in encoded})
        low = np.zeros((len(ids), t, size // 4, size // 4), np.float32)
        for frame, logits, _, obj_ids in hf_track(hf_model, pixels, steps, [(False, None)]):
            for row, obj in zip(logits, obj_ids):  # the propagation pass comes last: its outputs win
                low[ids.index(obj), frame] = row
        thr = model.preprocessing.mask_threshold
        out = np.stack([np.asarray(masks_from_logits(low[:, i], size, h, w, thr)) for i in range(t)], axis=1)
        for p in prompts:
            out[p.object, :p.frame] = False
        return out

    return run


def closed_loop(ckpt: str, data: str, split: str, *, frames: int = 8, frame_stride: int = 1,
                limit: int | None = None, hf_dir: str | None = None) -> dict:
    """Export `ckpt` (to `hf_dir`, or a temporary directory), then compare the two trackers on the split."""
    import itertools

    from converters import export_sam2
    from converters.sam2_verify_video import hf_video_model
    from data_pipelines.vos import VosClipConfig, VosReader, first_frame_box_prompts
    from stvl_jax.eval.vos_eval import box_copy, sam2_segmenter
    from stvl_jax.eval.vos_metrics import aggregate, score_clip
    from stvl_jax.infer.segment_cli import load_sam2_video

    model = load_sam2_video(ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = hf_dir or f"{tmp}/hf"
        export_sam2(ckpt, out_dir, progress=False, overwrite=hf_dir is not None)
        hf_model = hf_video_model(out_dir)
    ours, theirs = sam2_segmenter(model), hf_segmenter(hf_model, model)
    reader = VosReader(data, split, VosClipConfig(num_frames=frames, frame_stride=frame_stride), decode=True)
    ious, scored = [], {"jax": [], "transformers": [], "box_copy": []}
    for clip in itertools.islice(reader.clips(), limit):
        prompts = first_frame_box_prompts(clip)
        exclude = np.zeros(clip.masks.shape[:2], bool)
        for p in prompts:
            exclude[p.object, p.frame] = True
        a, b = ours(clip, prompts), theirs(clip, prompts)
        ious.append(frame_ious(a, b)[~exclude])
        for name, masks in (("jax", a), ("transformers", b), ("box_copy", box_copy(clip, prompts))):
            scored[name] += score_clip(clip.masks, masks, clip.cases, exclude)
    if not ious:
        from stvl_jax.errors import InputError

        raise InputError(f"no usable clip in split {split!r} of {data!r} (skipped: {dict(reader.skipped)})")
    iou = np.concatenate(ious)
    return {"clips": len(ious), "frames_compared": int(iou.size), "iou_min": float(iou.min()),
            "iou_mean": float(iou.mean()), "share_iou_ge_0.99": float((iou >= IOU_TARGET).mean()),
            "jf": {name: aggregate(objs)["overall"]["JF"] for name, objs in scored.items()},
            "skipped": dict(reader.skipped)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a sam2_video checkpoint of ours (e.g. stvl train's model dir)")
    p.add_argument("--data", required=True, help="a synthetic VOS set (stvl data synth --preset vos)")
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="clips (default: all)")
    p.add_argument("--hf-dir", default=None, help="keep the exported HF directory here")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    res = closed_loop(args.ckpt, args.data, args.split, frames=args.frames, frame_stride=args.frame_stride,
                      limit=args.limit, hf_dir=args.hf_dir)
    ok = res["iou_min"] >= IOU_TARGET
    print(f"closed loop on {res['clips']} clips, {res['frames_compared']} object-frames: mask IoU JAX vs "
          f"transformers min {res['iou_min']:.4f}, mean {res['iou_mean']:.4f}, share >= {IOU_TARGET} "
          f"{res['share_iou_ge_0.99']:.3f} -> {'OK' if ok else 'BELOW TARGET'}")
    jf = res["jf"]
    print(f"J&F vs ground truth: JAX {jf['jax']:.3f} | transformers {jf['transformers']:.3f} | "
          f"box copy {jf['box_copy']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
