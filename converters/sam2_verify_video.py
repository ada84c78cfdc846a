"""`stvl convert verify` of a `sam2_video` checkpoint's tracking path: transformers' `Sam2VideoModel` with its
`Sam2VideoInferenceSession` against our tracker (`stvl_jax.models.sam2.tracker`) on the same synthetic clip.

The clip comes from the config alone: 8 frames of N(0, 1) pixel values at the model's input size; object 1
clicked on frame 2 (one positive point), object 2 boxed on frame 5 (the box as HF's processor gives it: corner
points labelled 2 and 3); each prompted frame is run, then the video is propagated forward from the first
prompted frame and in reverse from the last frame. Both sides keep their memories in bf16 as shipped. Reported:
the largest |Δ| of the low-res mask logits and object-score logits over every output frame, and the fraction
of low-res mask pixels whose binarised value differs (bf16 memories can flip an element by one ulp, which moves
later frames' logits by ~1e-4, so the masks are the tracking criterion).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

FRAMES = 8
DEFAULT_MAX_FLIPPED = 1e-3  # binarised low-res mask pixels allowed to differ


@dataclasses.dataclass(frozen=True)
class TrackingReport:
    frames: int  # output frames compared (prompted frames + both propagation passes)
    mask_logits: float  # max |Δ| of the low-res mask logits
    object_scores: float
    flipped: float  # fraction of binarised low-res mask pixels that differ

    def ok(self, max_flipped: float = DEFAULT_MAX_FLIPPED) -> bool:
        return bool(self.flipped <= max_flipped) and np.isfinite(self.mask_logits)

    def describe(self) -> str:
        return (f"tracking, {self.frames} output frames (2 objects, 8-frame clip, forward + reverse): max |Δ mask "
                f"logit| {self.mask_logits:.3e}, |Δ object score| {self.object_scores:.3e}, binarised pixels "
                f"differing {self.flipped:.2e}")


def synthetic_clip(image_size: int, seed: int = 0):
    """(pixels (T, 3, S, S) float32, steps [(frame, obj_id, kind, value, labels)], passes [(reverse, start)])."""
    rng = np.random.default_rng(seed + 1)
    s = float(image_size)
    pixels = rng.standard_normal((FRAMES, 3, image_size, image_size)).astype(np.float32)
    steps = [(2, 1, "points", [[0.3 * s, 0.45 * s]], [1]),
             (5, 2, "box", [0.15 * s, 0.2 * s, 0.65 * s, 0.8 * s], None)]
    return pixels, steps, [(False, None), (True, FRAMES - 1)]


def hf_video_model(hf_dir):
    """transformers' `Sam2VideoModel.from_pretrained(hf_dir)`, fp32, eager attention, eval mode."""
    import torch
    import transformers

    return transformers.Sam2VideoModel.from_pretrained(str(hf_dir), dtype=torch.float32,
                                                       attn_implementation="eager").eval()


def hf_track(hf_dir, pixels: np.ndarray, steps, passes):
    """transformers' `Sam2VideoModel` (`hf_dir`: a directory, or a model from `hf_video_model`) over `pixels`
    (T, 3, S, S): each step (frame, obj_id, "points"|"box", model-input coords, labels) is run as it is added,
    then each pass (reverse, start_frame) propagates.
    Returns [(frame, low-res logits (O, S/4, S/4), object scores (O,), object ids)] in the order run."""
    import torch
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    model = hf_video_model(hf_dir) if isinstance(hf_dir, (str, os.PathLike)) else hf_dir
    size = pixels.shape[-1]
    session = Sam2VideoInferenceSession(video=torch.from_numpy(pixels), video_height=size, video_width=size,
                                        dtype=torch.float32)
    outs = []

    def record(frame, o):
        outs.append((frame, o.pred_masks.numpy().reshape(len(o.object_ids), size // 4, size // 4),
                     o.object_score_logits.numpy().reshape(-1), list(o.object_ids)))

    with torch.no_grad():
        for frame, obj, kind, value, labels in steps:
            idx = session.obj_id_to_idx(obj)
            if kind == "box":
                value, labels = np.reshape(value, (2, 2)).tolist(), [2, 3]
            session.add_point_inputs(idx, frame, {
                "point_coords": torch.tensor(value, dtype=torch.float32)[None, None],
                "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None]})
            session.obj_with_new_inputs = [obj]
            record(frame, model(inference_session=session, frame_idx=frame))
        for reverse, start in passes:
            for o in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                record(o.frame_idx, o)
    return outs


def _ours_run(model, pixels: np.ndarray, steps, passes):
    from stvl_jax.models.sam2.tracker import Prompt, Tracker

    tracker = Tracker(model, pixels, sorted({obj for _, obj, *_ in steps}))
    outs = []
    for frame, obj, kind, value, labels in steps:
        prompt = Prompt(box=value) if kind == "box" else Prompt(points=value, labels=labels)
        low, scores = tracker.add_prompts(frame, {obj: prompt})
        outs.append((frame, low, scores))
    for reverse, start in passes:
        outs.extend(tracker.propagate(reverse=reverse, start_frame=start))
    return outs


def verify_tracking(hf_dir, model, *, seed: int = 0) -> TrackingReport:
    """Compare the tracking path of the HF directory (transformers) and of our loaded `Sam2VideoModel`."""
    from stvl_jax.errors import CheckpointError

    pixels, steps, passes = synthetic_clip(model.config.image_size, seed)
    ref = hf_track(hf_dir, pixels, steps, passes)
    ours = _ours_run(model, pixels, steps, passes)
    if [r[0] for r in ref] != [o[0] for o in ours]:
        raise CheckpointError(f"tracking visited frames {[o[0] for o in ours]}, transformers "
                              f"{[r[0] for r in ref]}")
    object_ids = sorted({obj for _, obj, *_ in steps})
    d_logits = d_scores = 0.0
    flipped = total = 0
    for (_, r_low, r_scores, r_ids), (_, o_low, o_scores) in zip(ref, ours):
        cols = [object_ids.index(i) for i in r_ids]  # HF lists the objects registered so far
        o_low, o_scores = np.asarray(o_low, np.float64)[cols], np.asarray(o_scores, np.float64)[cols]
        if not (np.isfinite(o_low).all() and np.isfinite(o_scores).all()):
            return TrackingReport(len(ref), float("inf"), float("inf"), 1.0)
        d_logits = max(d_logits, float(np.abs(o_low - r_low).max()))
        d_scores = max(d_scores, float(np.abs(o_scores - r_scores).max()))
        flipped += int(((o_low > 0) != (r_low > 0)).sum())
        total += r_low.size
    return TrackingReport(len(ref), d_logits, d_scores, flipped / max(total, 1))
