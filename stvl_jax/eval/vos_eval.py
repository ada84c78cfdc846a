"""Promptable video object segmentation evaluation (`stvl eval vos`): J, F and J&F per case, beside the controls.

Every clip is segmented from one exact box per object on its first visible frame (`first_frame_box_prompts`);
the prompted frame of each object is left out of its scores (it is given, not predicted). Reported with it:

- `box_copy` baseline: the prompt's box, filled, on every frame from the prompted one on (no video used after
  the prompt; a tracker that does not beat it does not track);
- `black_frames` control: the same segmenter on the clip with every frame but the prompted ones blacked out
  (a score that does not drop without the video did not come from the video).

`segment(clip, prompts) -> (O, T, H, W) bool` is the segmenter (the SAM2 tracker in `stvl eval vos`; any
function in tests). Result: {"model", "box_copy", "black_frames"} each `vos_metrics.aggregate` output, plus
"clips", "objects" and "skipped" (the reader's counts by reason).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from data_pipelines.vos import VosClip, first_frame_box_prompts, mask_to_box
from stvl_jax.eval.vos_metrics import aggregate, score_clip

Segmenter = Callable[[VosClip, list], np.ndarray]


def box_copy(clip: VosClip, prompts: list) -> np.ndarray:
    """The baseline: each object's prompt box, filled, on its prompted frame and every later one."""
    o, t, h, w = clip.masks.shape
    out = np.zeros((o, t, h, w), bool)
    for p in prompts:
        x0, y0, x1, y1 = (int(round(v)) for v in mask_to_box(clip.masks[p.object, p.frame]))
        out[p.object, p.frame:, y0:y1 + 1, x0:x1 + 1] = True
    return out


def blacked_out(clip: VosClip, prompts: list) -> VosClip:
    """The clip with every frame that carries no prompt set to black."""
    keep = np.zeros(len(clip.frame_indices), bool)
    keep[[p.frame for p in prompts]] = True
    return dataclasses.replace(clip, frames=np.where(keep[:, None, None, None], clip.frames, 0).astype(np.uint8))


def _prompted(clip: VosClip, prompts: list) -> np.ndarray:
    skip = np.zeros(clip.masks.shape[:2], bool)
    for p in prompts:
        skip[p.object, p.frame] = True
    return skip


def evaluate_vos(clips: Iterable[VosClip], segment: Segmenter, *, controls: bool = True,
                 skipped: dict | None = None, progress=None) -> dict:
    """Score `segment` on every clip (decoded frames required) with the box-copy baseline and the black-frames
    control (`controls=False`: the model only)."""
    runs = {"model": [], "box_copy": [], "black_frames": []}
    n_clips = 0
    for clip in clips:
        if clip.frames is None:
            raise ValueError(f"clip of {clip.vid!r} is not decoded (VosReader(decode=True))")
        prompts = first_frame_box_prompts(clip)
        exclude = _prompted(clip, prompts)
        runs["model"] += score_clip(clip.masks, segment(clip, prompts), clip.cases, exclude)
        if controls:
            runs["box_copy"] += score_clip(clip.masks, box_copy(clip, prompts), clip.cases, exclude)
            runs["black_frames"] += score_clip(clip.masks, segment(blacked_out(clip, prompts), prompts),
                                               clip.cases, exclude)
        n_clips += 1
        if progress is not None:
            progress(n_clips)
    out = {name: aggregate(objs) for name, objs in runs.items() if objs}
    out["clips"] = n_clips
    out["objects"] = len(runs["model"])
    out["skipped"] = dict(skipped or {})
    return out


def sam2_segmenter(model) -> Segmenter:
    """The SAM2 tracker as a `Segmenter`: the prompts as `stvl segment` boxes (object k is id k + 1), propagated
    forward from the first prompted frame; an object's frames before its own prompt are empty (it has not been
    introduced yet, as in DAVIS's semi-supervised protocol)."""
    from stvl_jax.infer.segment_cli import segment
    from stvl_jax.infer.segment_prompts import Prompt as BoxPrompt

    def run(clip: VosClip, prompts: list) -> np.ndarray:
        boxes = [BoxPrompt("box", tuple(float(v) for v in p.box), p.frame, p.object + 1) for p in prompts]
        _, masks = segment(model, clip.frames, boxes, direction="forward", progress=False)
        out = masks.transpose(1, 0, 2, 3).copy()  # (O, T, H, W); ids ascend with the object index
        for p in prompts:
            out[p.object, :p.frame] = False
        return out

    return run


def run_vos(args) -> dict:
    """`stvl eval vos`: the SAM2 checkpoint on a split of a synthetic set (whole videos by default)."""
    import itertools
    import json
    import os

    from data_pipelines.vos import VosClipConfig, VosReader
    from stvl_jax.errors import InputError
    from stvl_jax.eval.vos_plots import plot_jf_per_case, plot_per_frame
    from stvl_jax.infer.segment_cli import load_sam2_video

    reader = VosReader(args.data, args.split, VosClipConfig(num_frames=args.frames, frame_stride=args.frame_stride),
                       decode=True)
    model = load_sam2_video(args.ckpt)
    clips = itertools.islice(reader.clips(), args.limit)
    res = evaluate_vos(clips, sam2_segmenter(model), controls=not args.no_controls, skipped=reader.skipped,
                       progress=lambda n: print(f"\rvos: {n} clips", end="", flush=True))
    print()
    if res["clips"] == 0:
        raise InputError(f"no usable clip in split {args.split!r} of {args.data!r} (skipped: {dict(reader.skipped)})")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vos_metrics.json"), "w") as f:
        json.dump(res, f, indent=1)
    plot_jf_per_case(res["model"], os.path.join(args.out, "vos_jf_per_case.png"))
    plot_per_frame(res["model"], os.path.join(args.out, "vos_per_frame.png"))
    for name, r in res.items():
        if name in ("model", "box_copy", "black_frames"):
            cases = ", ".join(f"{c} {v['JF']:.3f} ({v['count']})" for c, v in r["per_case"].items())
            print(f"vos {name}: J&F {r['overall']['JF']:.3f} (J {r['overall']['J_mean']:.3f}, "
                  f"F {r['overall']['F_mean']:.3f}); per case: {cases}")
    skipped = sum(res["skipped"].values())
    print(f"{res['clips']} clips, {res['objects']} objects, skipped {skipped} {res['skipped'] or ''} -> {args.out}")
    return res
