"""Real tiny video files for tests, written with PyAV (any container/encoder this FFmpeg build has)."""

import fractions

import numpy as np


def write_video(path: str, codec: str, rate: fractions.Fraction, frames: int, options: dict | None = None) -> str:
    """A 64x48 clip whose frame i is the grey level 37 * i mod 255 (so decoded frames can be told apart).
    `options`: muxer options (e.g. {"live": "1"}: a WebM with no duration)."""
    import av

    with av.open(path, "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), (37 * i) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
