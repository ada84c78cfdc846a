"""What `stvl segment` writes: masks.json (per frame, per object: COCO RLE at the video's size + object score),
overlay.mp4 and contact_sheet.png (masks drawn over the frames), logits.npz (the low-res logits, for parity).

masks.json schema (`"format": "stvl-jax/segment-masks", "version": 1`):

    {"video": str, "height": H, "width": W, "fps": float, "num_frames": T, "object_ids": [int, ...],
     "prompts": [{"kind": "box"|"point", "coords": [...], "label": int, "frame": int, "object": int}, ...],
     ["query": str,]  (VIRST: the referring expression; object 1 is its target, prompts is empty)
     "frames": [{"frame": t, "time": seconds, "objects": [{"object": id, "score": p, "present": bool,
                                                          "area": pixels, "rle": {"size": [H, W], "counts": [...]}}]}]}

`rle` is COCO's uncompressed RLE (column-major runs starting with background; pycocotools' `frPyObjects` reads
it), `score` the sigmoid of SAM2's object-score logit, `present` whether that logit is > 0 (SAM2 blanks the mask
of an object it judges absent).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from data_pipelines.rle import rle_encode

SCHEMA = {"format": "stvl-jax/segment-masks", "version": 1}
# tab10, as uint8 RGB: object k gets PALETTE[k % 10]
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


def draw_masks(frame: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """frame (H, W, 3) uint8, masks (O, H, W) bool -> the frame with each mask tinted in its object's colour and
    outlined (one pixel)."""
    out = frame.astype(np.float32)
    for k, m in enumerate(masks):
        if not m.any():
            continue
        color = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * color
        p = np.pad(m, 1)
        edge = m & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])  # a 4-neighbour is background
        out[edge] = color
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_masks_json(path: str, *, video: str, fps: float, times: Sequence[float], object_ids: Sequence[int],
                     masks: np.ndarray, score_logits: np.ndarray, prompts: Sequence, query: str | None = None
                     ) -> dict:
    """masks (T, O, H, W) bool at the video's size, score_logits (T, O) -> the document (also written to path)."""
    t, o, h, w = masks.shape
    frames = []
    for i in range(t):
        objs = []
        for k in range(o):
            logit = float(score_logits[i, k])
            objs.append({"object": int(object_ids[k]), "score": float(1 / (1 + np.exp(-logit))),
                         "present": logit > 0, "area": int(masks[i, k].sum()), "rle": rle_encode(masks[i, k])})
        frames.append({"frame": i, "time": round(float(times[i]), 6), "objects": objs})
    doc = {**SCHEMA, "video": video, "height": h, "width": w, "fps": float(fps), "num_frames": t,
           "object_ids": [int(x) for x in object_ids],
           "prompts": [{"kind": p.kind, "coords": list(p.coords), "label": p.label, "frame": p.frame,
                        "object": p.obj} for p in prompts],
           **({"query": query} if query is not None else {}),
           "frames": frames}
    with open(path, "w") as f:
        json.dump(doc, f)
    return doc


def write_overlay_video(path: str, frames: np.ndarray, masks: np.ndarray, fps: float) -> str:
    """frames (T, H, W, 3) uint8 with masks (T, O, H, W) drawn -> an H.264 mp4 (MPEG-4 Part 2 where this FFmpeg
    has no libx264). Odd sizes lose their last row/column (yuv420p needs even sides)."""
    import fractions

    import av

    h, w = (frames.shape[1] // 2) * 2, (frames.shape[2] // 2) * 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame, m in zip(frames, masks):
            img = draw_masks(frame, m)[:h, :w]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_contact_sheet(path: str, frames: np.ndarray, masks: np.ndarray, times: Sequence[float] | None,
                        n: int = 8, columns: int = 4, thumb_width: int = 320,
                        labels: Sequence[str] | None = None) -> list[int]:
    """A PNG grid of n evenly spaced frames with their masks, each labelled with its index and time (or, given
    `labels`, with its label: e.g. frame names of an image-sequence set); returns the frame indices shown."""
    from PIL import Image, ImageDraw

    t = len(frames)
    picks = sorted(set(np.linspace(0, t - 1, min(n, t)).round().astype(int).tolist()))
    scale = thumb_width / frames.shape[2]
    tw, th = thumb_width, max(1, round(frames.shape[1] * scale))
    rows = -(-len(picks) // columns)
    sheet = Image.new("RGB", (columns * tw, rows * th), (255, 255, 255))
    for j, i in enumerate(picks):
        thumb = Image.fromarray(draw_masks(frames[i], masks[i])).resize((tw, th), Image.BILINEAR)
        text = labels[i] if labels is not None else f"#{i}  {times[i]:.2f}s"
        ImageDraw.Draw(thumb).text((4, 4), text, fill=(255, 255, 255))
        sheet.paste(thumb, ((j % columns) * tw, (j // columns) * th))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)
    return picks


def write_logits(path: str, logits: np.ndarray, object_ids: Sequence[int], score_logits: np.ndarray) -> str:
    """logits (T, O, h, w) float32: SAM2's low-res mask logits (h = w = image_size / 4) before upsampling."""
    np.savez(path, logits=np.asarray(logits, np.float32), object_ids=np.asarray(object_ids, np.int64),
             object_score_logits=np.asarray(score_logits, np.float32))
    return path
