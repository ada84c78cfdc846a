"""Video IO: sampling bookkeeping, typed errors naming the file, no hangs."""

import os
import time

import numpy as np
import pytest

from data_pipelines.errors import VideoDecodeError
from data_pipelines.rle import rle_area, rle_decode, rle_encode
from data_pipelines.video import check_video_isolated, decode_frames, probe_video, read_video, sample_indices


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
