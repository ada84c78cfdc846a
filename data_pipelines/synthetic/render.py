"""Rasterize a simulated scene to RGB frames + instance id maps, and write real H.264 mp4 files with PyAV."""

from __future__ import annotations

import numpy as np

from data_pipelines.synthetic.scene import SQUARE_HALF, Scene
from data_pipelines.synthetic.vocabulary import BACKGROUND, OCCLUDER, PALETTE

OCCLUDER_ID = -1
PIX_FMT = "yuv444p"  # High 4:4:4: no chroma subsampling, so colour edges (and masks) survive


def shape_mask(category: str, cx: float, cy: float, r: int, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside the shape (hard edges, no anti-aliasing)."""
    ys = np.arange(height)[:, None] + 0.5 - cy
    xs = np.arange(width)[None, :] + 0.5 - cx
    if category == "circle":
        return xs * xs + ys * ys <= r * r
    if category == "square":
        h = SQUARE_HALF * r
        return (np.abs(xs) <= h) & (np.abs(ys) <= h)
    if category == "diamond":
        return np.abs(xs) + np.abs(ys) <= r
    if category == "triangle":  # apex up, base at +0.8 r
        return (ys <= 0.8 * r) & (ys >= -r) & (np.abs(xs) <= (ys + r) / 1.8)
    raise ValueError(f"unknown shape {category!r}")


def render_frame(scene: Scene, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame k -> (rgb (H, W, 3) uint8, ids (H, W) int16: 0 background, entity id, -1 occluder)."""
    H, W = scene.height, scene.width
    ids = np.zeros((H, W), dtype=np.int16)
    step = scene.frame_step(k)
    for i in sorted(range(len(scene.entities)), key=lambda i: scene.entities[i].layer):
        e = scene.entities[i]
        x = scene.x[i, step]
        if np.isnan(x):
            continue
        ids[shape_mask(e.category, x, e.lane_y, e.radius, H, W)] = e.id
    for x0, y0, x1, y1 in scene.occluders:
        ids[y0:y1, x0:x1] = OCCLUDER_ID
    lut = {0: BACKGROUND, OCCLUDER_ID: OCCLUDER, **{e.id: PALETTE[e.color] for e in scene.entities}}
    rgb = np.empty((H, W, 3), dtype=np.uint8)
    for key, color in lut.items():
        rgb[ids == key] = color
    return rgb, ids


def full_shape_area(scene: Scene, i: int, k: int) -> int:
    """Pixels of entity i's shape inside the frame at frame k ignoring occlusion (0 when absent)."""
    e = scene.entities[i]
    x = scene.x[i, scene.frame_step(k)]
    if np.isnan(x):
        return 0
    return int(shape_mask(e.category, x, e.lane_y, e.radius, scene.height, scene.width).sum())


def write_mp4(path: str, frames, fps: int, crf: int = 18, pix_fmt: str = PIX_FMT) -> None:
    """Encode RGB frames (iterable of (H, W, 3) uint8) as H.264 (libx264, yuv420p) in an mp4 container."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        # Deterministic single-threaded encode: identical bytes for identical input.
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "threads=1"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
