"""`stvl segment VIDEO --ckpt SAM2_CKPT (--box X0,Y0,X1,Y1 | --point X,Y[:LABEL])... --out DIR`: promptable video
segmentation with SAM2 (prompts on any frames, several objects; `--frame K` / `--object N` apply to the prompts
that follow them). `stvl segment VIDEO --ckpt VIRST_CKPT --query TEXT --out DIR`: referring segmentation with
VIRST (the object the sentence names, object 1, on every frame; `stvl_jax.infer.virst`).

    stvl segment clip.mp4 --ckpt ckpt/sam2.1-tiny --box 40,30,120,90 --object 2 --frame 12 --point 200,64 \\
        --out seg/ --save-logits
    stvl segment clip.mp4 --ckpt runs/virst_tiny/final --query "the red circle that enters last" --out seg/

Frames are read at --fps (default: every frame), prepared with the checkpoint's preprocessing, tracked from the
first prompted frame to the end and back to frame 0 (`--direction`), and written to DIR: masks.json (per frame and
object: COCO RLE at the video's size, object score; schema in `segment_outputs`), overlay.mp4, contact_sheet.png,
and with --save-logits logits.npz (the low-res logits (frames, objects, S/4, S/4) before upsampling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from stvl_jax.cli_args import output_dir, positive_float, positive_int
from stvl_jax.errors import InputError
from stvl_jax.infer.segment_prompts import add_prompt_arguments, check_prompts, encode_prompts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stvl segment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file")
    p.add_argument("--ckpt", required=True, help="SAM2 video checkpoint (stvl convert import, training, HF dir) for "
                   "--box/--point, or a VIRST checkpoint for --query")
    add_prompt_arguments(p)
    p.add_argument("--query", default=None, metavar="TEXT",
                   help="referring expression (VIRST checkpoints): segment the object it names")
    p.add_argument("--out", type=output_dir, required=True, help="output directory")
    p.add_argument("--fps", type=positive_float, default=None, help="frames per second to read (default: all)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="read at most this many frames")
    p.add_argument("--direction", choices=("both", "forward", "reverse"), default="both",
                   help="propagation from the first prompted frame (both: forward, then back to frame 0)")
    p.add_argument("--save-logits", action="store_true", help="also write logits.npz (low-res logits)")
    p.add_argument("--sheet-frames", type=positive_int, default=8, help="frames on the contact sheet")
    return p


def load_sam2_video(ckpt: str):
    """The SAM2 video model of `ckpt`; another model's checkpoint is one InputError."""
    import stvl_jax
    from stvl_jax.models.sam2.video_model import Sam2VideoModel

    model = stvl_jax.load_model(ckpt)
    if not isinstance(model, Sam2VideoModel):
        raise InputError(f"checkpoint {ckpt!r} holds a {type(model).__name__}, not a SAM2 video model "
                         f"(import a sam2_video checkpoint: stvl convert import --hf DIR, or --meta-pt FILE)")
    return model


def segment(model, frames, prompts, *, direction: str = "both", progress: bool = True):
    """frames (T, H, W, 3) uint8 + checked `segment_prompts.Prompt`s -> (TrackResult, masks (T, O, H, W) bool)."""
    import numpy as np
    from tqdm import tqdm

    from stvl_jax.models.sam2.host.preprocess import preprocess_frames
    from stvl_jax.models.sam2.postprocess import masks_from_logits
    from stvl_jax.models.sam2.tracker import Tracker

    t, h, w = frames.shape[:3]
    size = model.config.image_size
    encoded = encode_prompts(prompts, h, w, size)
    pixels = preprocess_frames(frames, model.preprocessing)
    object_ids = sorted({obj for _, obj in encoded})
    per_obj = max(sum(1 for _, o in encoded if o == obj) for obj in object_ids)
    tracker = Tracker(model, pixels, object_ids, cond_capacity=max(per_obj, 1))
    for frame in sorted({f for f, _ in encoded}):
        tracker.add_prompts(frame, {obj: p for (f, obj), p in encoded.items() if f == frame})
    passes = {"both": (False, True), "forward": (False,), "reverse": (True,)}[direction]
    bar = tqdm(total=t * len(passes), desc="segment", unit="frame", file=sys.stderr, disable=not progress)
    for reverse in passes:
        for _ in tracker.propagate(reverse=reverse):
            bar.update(1)
    bar.close()
    result = tracker.result()
    thr = model.preprocessing.mask_threshold
    masks = np.stack([np.asarray(masks_from_logits(result.low_res_logits[i], size, h, w, thr)) for i in range(t)])
    return result, masks


def segment_query(args, frames, times, fps):
    """--query with a VIRST checkpoint -> (result with object_ids (1,), object_score_logits (T, 1) and
    low_res_logits (T, 1, h, w); masks (T, 1, H, W) bool)."""
    from types import SimpleNamespace

    from stvl_jax.infer.virst import VirstSegmenter, load_virst

    if args.prompts:
        raise InputError(f"{args.prompts[0].describe()} with --query: give either --query TEXT (a VIRST checkpoint) "
                         "or --box/--point prompts (a SAM2 checkpoint), not both")
    if not args.query.strip():
        raise InputError("--query is empty: give the sentence that names the object")
    if not os.path.isdir(args.ckpt):
        raise InputError(f"--query needs a VIRST checkpoint directory; {args.ckpt!r} is not a directory")
    try:
        model, tokenizer = load_virst(args.ckpt)
    except InputError as e:
        raise InputError(f"--query: {e}") from None
    out = VirstSegmenter(model, tokenizer).segment(frames, args.query, times, fps=fps)
    result = SimpleNamespace(object_ids=(1,), object_score_logits=out.object_score_logits[:, None],
                             low_res_logits=out.low_res_logits[:, None])
    return result, out.masks[:, None]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from data_pipelines.video import read_video, stat_video_file

    stat_video_file(args.video)
    clip = read_video(args.video, fps=args.fps, max_frames=args.max_frames)
    frames = clip.frames
    fps = args.fps or clip.info.fps
    if args.query is not None:
        result, masks = segment_query(args, frames, clip.times, fps)
    else:
        from stvl_jax.models.virst.checkpoint import is_virst

        if os.path.isdir(args.ckpt) and is_virst(args.ckpt):
            raise InputError(f"checkpoint {args.ckpt!r} is VIRST: it segments what --query TEXT names, not "
                             "--box/--point prompts (those need a SAM2 checkpoint)")
        check_prompts(args.prompts, len(frames), frames.shape[1], frames.shape[2], args.video)
        model = load_sam2_video(args.ckpt)
        result, masks = segment(model, frames, args.prompts, direction=args.direction)

    from stvl_jax.infer.segment_outputs import (
        write_contact_sheet, write_logits, write_masks_json, write_overlay_video,
    )

    os.makedirs(args.out, exist_ok=True)
    write_masks_json(os.path.join(args.out, "masks.json"), video=args.video, fps=fps, times=clip.times,
                     object_ids=result.object_ids, masks=masks, score_logits=result.object_score_logits,
                     prompts=args.prompts, query=args.query)
    write_overlay_video(os.path.join(args.out, "overlay.mp4"), frames, masks, fps)
    write_contact_sheet(os.path.join(args.out, "contact_sheet.png"), frames, masks, clip.times,
                        n=args.sheet_frames)
    if args.save_logits:
        write_logits(os.path.join(args.out, "logits.npz"), result.low_res_logits, result.object_ids,
                     result.object_score_logits)
    present = (result.object_score_logits > 0).sum(0)
    print(json.dumps({"out": args.out, "frames": len(frames), "objects": list(result.object_ids),
                      "frames_present": {str(o): int(n) for o, n in zip(result.object_ids, present)}}))
    return 0
