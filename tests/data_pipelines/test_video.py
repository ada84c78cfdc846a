"""Video IO: sampling bookkeeping, typed errors naming the file, no hangs."""

import os
import time

import numpy as np
import pytest

from data_pipelines.errors import VideoDecodeError
from data_pipelines.rle import rle_area, rle_decode, rle_encode
from data_pipelines.video import (VideoInfo, check_video_isolated, decode_frames, probe_video, read_video,
                                  sample_indices, stream_indices)


def test_probe_and_fps_resampling(synth_dir):
    path = os.path.join(synth_dir, "videos", "synth_00001.mp4")
    info = probe_video(path)
    assert info.fps == 4.0 and info.width == info.height == 128 and info.num_frames % 4 == 0
    clip = read_video(path, fps=1.0)
    assert clip.indices.tolist() == list(range(0, info.num_frames, 4))
    np.testing.assert_allclose(clip.times, np.arange(len(clip.indices)) * 1.0)
    assert clip.frames.shape == (len(clip.indices), 128, 128, 3) and clip.frames.dtype == np.uint8
    # clipping [2.1, 5.0) at 2 fps: sample times 2.1, 2.6, ... -> the frame shown then (floor(t * 4))
    c = read_video(path, fps=2.0, start=2.1, end=5.0)
    assert c.indices.tolist() == [8, 10, 12, 14, 16]  # floor((2.1 + k/2) * 4)
    assert c.times.tolist() == [2.0, 2.5, 3.0, 3.5, 4.0]
    n = read_video(path, num_frames=5, start=1.0, end=3.0)
    assert n.indices.tolist() == [4, 6, 8, 9, 11]  # round(linspace(4, 11, 5)), frames of [1 s, 3 s)
    capped = read_video(path, fps=4.0, max_frames=6)
    assert len(capped.indices) == 6 and capped.indices[0] == 0 and capped.indices[-1] == info.num_frames - 1


# The released STRIDE evaluation's rule (interlive-team/STRIDE eval/task/utils.py `load_video_frames`): positions
# k * avg_fps / fps below the frame count (numpy float arange: ceil(frames * fps / avg_fps) of them), rounded half
# to even, clipped to the last frame, no cap; time = index / avg_fps. Worked by hand per case:
STREAM_CASES = [
    # 100 frames at 29.97 fps, 1 fps: step 29.97, ceil(100 / 29.97) = ceil(3.34) = 4 positions 0, 29.97, 59.94,
    # 89.91 -> 0, 30, 60, 90 (flooring gives 0, 29, 59, 89, and floor(3.34 s * 1) = 3 frames)
    (100, 29.97, 1.0, [0, 30, 60, 90]),
    # 250 frames at 25 fps, 1 fps: step 25, 10 positions 0, 25, ..., 225 (exact: floor and round agree)
    (250, 25.0, 1.0, list(range(0, 250, 25))),
    # 95 frames at 10 fps, 1 fps: step 10, ceil(9.5) = 10 positions 0..90 (the 9.5 s video keeps t = 9 s)
    (95, 10.0, 1.0, list(range(0, 100, 10))),
    # 50 frames at 12.5 fps, 1 fps: step 12.5, 4 positions 0, 12.5, 25, 37.5 -> half to even 0, 12, 25, 38
    (50, 12.5, 1.0, [0, 12, 25, 38]),
    # 5 frames at 2 fps, 3 fps: step 2/3, ceil(7.5) = 8 positions 0, .67, 1.33, 2, 2.67, 3.33, 4, 4.67
    # -> 0, 1, 1, 2, 3, 3, 4, 5 -> the last clipped to frame 4
    (5, 2.0, 3.0, [0, 1, 1, 2, 3, 3, 4, 4]),
    # 108000 frames (1 h) at 30 fps, 1 fps: 3600 frames 0, 30, ..., 107970 - no max_frames cap
    (108000, 30.0, 1.0, list(range(0, 108000, 30))),
]


@pytest.mark.parametrize("frames,avg_fps,fps,expected", STREAM_CASES)
def test_stream_indices_follow_the_released_stride_loader(frames, avg_fps, fps, expected):
    info = VideoInfo(path="v.mp4", num_frames=frames, fps=avg_fps, width=64, height=48)
    idx = stream_indices(info, fps)
    assert idx.dtype == np.int64 and idx.tolist() == expected


def test_stream_indices_round_where_sample_indices_floor():
    info = VideoInfo(path="v.mp4", num_frames=100, fps=29.97, width=64, height=48)
    assert sample_indices(info, fps=1.0).tolist() == [0, 29, 59]  # floor(k * 29.97), floor(3.34) frames
    assert stream_indices(info, 1.0).tolist() == [0, 30, 60, 90]
    with pytest.raises(ValueError, match="fps must be positive"):
        stream_indices(info, 0.0)


def test_stream_clip_of_a_29_97_fps_file(tmp_path):
    """Decoded: 300 frames at 30000/1001 fps streamed at 1 fps -> step 29.97003, ceil(300 / 29.97003) = 11
    positions 0, 29.97, ..., 269.73, 299.70 -> 0, 30, ..., 270, 300 -> the last clipped to 299; times
    index * 1001 / 30000 (1.001 s, 2.002 s, ..., 9.00901 s, then 299 * 1001 / 30000 = 9.97663 s)."""
    import fractions

    from data_pipelines.video import decode_clip
    from video_files import write_video

    path = write_video(str(tmp_path / "ntsc.mp4"), "mpeg4", fractions.Fraction(30000, 1001), 300)
    clip = decode_clip(path, lambda info: stream_indices(info, 1.0))
    expected = [30 * k for k in range(10)] + [299]
    assert clip.indices.tolist() == expected
    np.testing.assert_allclose(clip.times, np.array(expected) * 1001 / 30000, rtol=0, atol=1e-9)
    assert clip.times[-1] == pytest.approx(9.976633, abs=1e-6)


def test_decoded_frames_match_decord_direct(synth_dir):
    import decord

    path = os.path.join(synth_dir, "videos", "synth_00002.mp4")
    idx = [0, 3, 7, 20]
    ref = decord.VideoReader(path).get_batch(idx).asnumpy()
    np.testing.assert_array_equal(decode_frames(path, idx), ref)


def test_uncopied_frames_are_read_only_views_that_outlive_the_decoder(synth_dir):
    import gc

    paths = [os.path.join(synth_dir, "videos", f"synth_{i:05d}.mp4") for i in range(4)]
    idx = [0, 3, 7, 20]
    views = [decode_frames(p, idx, copy=False) for p in paths]  # readers and NDArrays are gone after each call
    gc.collect()
    again = [decode_frames(p, [1, 2, 5, 9, 11], copy=False) for p in paths]  # decord allocates anew meanwhile
    for p, v, a in zip(paths, views, again):
        assert not v.flags.writeable and len(v) == 4 and len(a) == 5
        np.testing.assert_array_equal(v, decode_frames(p, idx))
    with pytest.raises(ValueError, match="read-only"):
        views[0][0, 0, 0] = 1
    clip = read_video(paths[0], fps=2.0, copy=False)
    np.testing.assert_array_equal(clip.frames, read_video(paths[0], fps=2.0).frames)


def test_each_thread_keeps_only_its_last_reader_until_the_next_is_open(synth_dir, monkeypatch):
    """decode_frames frees a reader once the next one is open (cheaper decoding, see `_last_reader`): at most one
    reader per thread outlives its call, and it is released by the next call, not leaked."""
    import threading
    import weakref

    import decord

    from data_pipelines import video

    opened = []  # (weak reference to each reader, whether the previous one was alive when it opened)

    class Reader(decord.VideoReader):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            opened.append((weakref.ref(self), bool(opened) and opened[-1][0]() is not None))

    monkeypatch.setattr(decord, "VideoReader", Reader)
    monkeypatch.setattr(video, "_last_reader", threading.local())
    paths = [os.path.join(synth_dir, "videos", f"synth_{i:05d}.mp4") for i in range(3)]
    for p in paths:
        decode_frames(p, [0, 2], timeout_s=None, copy=False)
    assert [prev_alive for _, prev_alive in opened] == [False, True, True]  # each open came before the free
    assert [r() is None for r, _ in opened] == [True, True, False]  # only the last reader is still held
    decode_frames(paths[0], [1], timeout_s=None)
    assert opened[2][0]() is None


def test_decoding_opens_the_file_once_and_takes_decords_metadata(synth_dir, monkeypatch):
    """One decord open per clip (no PyAV probe on a good file: a second open costs ~8 % of a short clip's decode);
    decord's frame count and rate agree with the probe's on the synthetic set."""
    import decord

    from data_pipelines import video

    paths = [os.path.join(synth_dir, "videos", f"synth_{i:05d}.mp4") for i in range(4)]
    probed = {p: probe_video(p) for p in paths}
    opened = []

    class Reader(decord.VideoReader):
        def __init__(self, uri, *a, **kw):
            opened.append(uri)
            super().__init__(uri, *a, **kw)

    def no_probe(path):
        raise AssertionError(f"probed {path}")

    monkeypatch.setattr(decord, "VideoReader", Reader)
    monkeypatch.setattr(video, "probe_video", no_probe)
    for p in paths:
        seen = []
        clip = video.decode_clip(p, lambda info: seen.append(info) or [0, info.num_frames - 1])
        assert (seen[0].num_frames, seen[0].fps) == (probed[p].num_frames, probed[p].fps)
        assert clip.info == probed[p] and clip.indices.tolist() == [0, probed[p].num_frames - 1]
    assert opened == paths


def test_clip_selection_errors(synth_dir):
    """What `select` raises reaches the caller as is; a plain ValueError (an empty clip), no indices and
    indices outside the video are VideoDecodeErrors naming the file."""
    from data_pipelines.errors import AnnotationError
    from data_pipelines.video import decode_clip

    path = os.path.join(synth_dir, "videos", "synth_00001.mp4")

    def out_of_range(info):
        raise AnnotationError("time_out_of_range", "start 500 s", "rec-1")

    with pytest.raises(AnnotationError, match="time_out_of_range"):
        decode_clip(path, out_of_range)
    with pytest.raises(VideoDecodeError, match="invalid clip") as e:
        read_video(path, start=500.0)
    assert e.value.path == path
    with pytest.raises(VideoDecodeError, match="no frame indices"):
        decode_clip(path, lambda info: [])
    for bad in ([0, -1], [0, 10_000]):  # decord itself would wrap a negative index
        with pytest.raises(VideoDecodeError, match="out of range"):
            decode_frames(path, bad)


def test_sample_indices_rejects_bad_clips(synth_dir):
    info = probe_video(os.path.join(synth_dir, "videos", "synth_00001.mp4"))
    for kw in ({"start": 5.0, "end": 2.0}, {"start": -1.0}, {"start": float("nan")}, {"fps": 0.0}):
        with pytest.raises(ValueError):
            sample_indices(info, **kw)


@pytest.mark.parametrize("kind", ["truncated", "zero", "text", "missing"])
def test_bad_files_raise_typed_error_naming_the_file(bad_videos, kind):
    path = bad_videos[kind]
    t = time.time()
    with pytest.raises(VideoDecodeError) as e:
        read_video(path, fps=1.0)
    assert path in str(e.value) and e.value.path == path
    if kind == "text":  # decord's refusal is explained by the PyAV probe
        assert "not a readable video container" in e.value.reason
    assert time.time() - t < 10


def test_watchdog_turns_a_hanging_decoder_into_an_error(bad_videos, monkeypatch):
    import decord

    class Hangs:
        def __init__(self, *a, **k):
            time.sleep(30)

    monkeypatch.setattr(decord, "VideoReader", Hangs)
    t = time.time()
    with pytest.raises(VideoDecodeError, match="did not finish within 0.5 s"):
        decode_frames(bad_videos["good"], [0], timeout_s=0.5)
    assert time.time() - t < 5


def test_isolated_check_survives_crash_and_hang(bad_videos):
    good = bad_videos["good"]
    assert check_video_isolated(good).num_frames > 0
    with pytest.raises(VideoDecodeError, match="crashed"):
        check_video_isolated(good, _child_code="import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(VideoDecodeError, match="killed"):
        check_video_isolated(good, timeout_s=1, _child_code="import time; time.sleep(60)")
    with pytest.raises(VideoDecodeError):
        check_video_isolated(bad_videos["truncated"])


def test_rle_roundtrip_and_convention():
    m = np.zeros((3, 4), dtype=bool)
    m[1, 0] = m[2, 0] = m[0, 2] = True
    rle = rle_encode(m)
    # column-major: col0 = [0,1,1], col1 = [0,0,0], col2 = [1,0,0], col3 = [0,0,0]
    assert rle == {"size": [3, 4], "counts": [1, 2, 3, 1, 5]}
    assert (rle_decode(rle) == m).all() and rle_area(rle) == 3
    full = np.ones((2, 2), bool)
    assert rle_encode(full)["counts"] == [0, 4]
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.random((17, 23)) < 0.3
        assert (rle_decode(rle_encode(x)) == x).all()
    with pytest.raises(ValueError):
        rle_decode({"size": [2, 2], "counts": [1, 2]})
