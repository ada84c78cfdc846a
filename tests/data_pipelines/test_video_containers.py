"""The probe on containers that store no frame count (Matroska, WebM): real tiny files written here with PyAV, at
odd rates and fractional lengths; the reference for every number is decord (what the pipeline decodes with)."""

import fractions
import os

import numpy as np
import pytest

from data_pipelines.errors import VideoDecodeError
from data_pipelines.video import probe_video, read_video
from video_files import write_video

F = fractions.Fraction
# (file name, encoder, frame rate, frames): lengths 2.5 s, 2.5167 s, 1.568 s, 4.213 s, 2.483 s
CASES = [
    ("vp8_4fps.webm", "libvpx", F(4), 10),
    ("vp8_60fps.webm", "libvpx", F(60), 151),
    ("mpeg4_60fps.mkv", "mpeg4", F(60), 151),
    ("h264_2997fps.mkv", "libx264", F(30000, 1001), 47),
    ("mpeg4_23976fps.mkv", "mpeg4", F(24000, 1001), 101),
    ("vp8_60fps_short.webm", "libvpx", F(60), 149),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("containers")
    return {name: write_video(str(d / name), codec, rate, n) for name, codec, rate, n in CASES}


@pytest.mark.parametrize("name,codec,rate,frames", CASES, ids=[c[0] for c in CASES])
def test_probe_of_containers_without_a_frame_count_matches_decord(videos, name, codec, rate, frames):
    import av
    import decord

    path = videos[name]
    with av.open(path) as c:  # the premise: these containers store no frame count
        assert c.streams.video[0].frames == 0
    info = probe_video(path)
    vr = decord.VideoReader(path)
    assert (info.num_frames, info.width, info.height) == (len(vr), 64, 48) == (frames, 64, 48)
    assert info.fps == pytest.approx(vr.get_avg_fps(), rel=1e-12)
    assert info.duration == pytest.approx(len(vr) / vr.get_avg_fps(), rel=1e-12)
    assert info.duration == pytest.approx(frames / float(rate), rel=1e-12)


def test_every_frame_the_probe_counts_decodes(videos):
    path = videos["mpeg4_60fps.mkv"]
    info = probe_video(path)
    clip = read_video(path)  # every frame
    assert clip.indices.tolist() == list(range(info.num_frames))
    grey = clip.frames[..., 0].mean(axis=(1, 2))
    np.testing.assert_allclose(grey, (37 * np.arange(info.num_frames)) % 255, atol=6)  # mpeg4 is lossy


def test_a_container_with_no_duration_is_refused_like_decord_refuses_it(tmp_path):
    import decord

    path = write_video(str(tmp_path / "live.webm"), "libvpx", F(4), 10, options={"live": "1"})  # no Duration
    with pytest.raises(decord.DECORDError):
        decord.VideoReader(path)
    with pytest.raises(VideoDecodeError) as e:
        probe_video(path)
    assert "live.webm" in str(e.value) and "neither a frame count nor a duration" in str(e.value)


def test_streamo_conversion_of_a_webm_counts_decords_turns(videos, tmp_path):
    """The reference converter (maifoundations/Streamo scripts/convert_streaming_video.py) counts turns as
    total_frames // int(video_fps / fps) with OpenCV's count, which for Matroska/WebM is round(duration * fps)."""
    import decord

    from data_pipelines.formats.streamo import convert_record

    path = videos["vp8_60fps.webm"]
    rec = {"video_path": os.path.basename(path), "question": [{"content": "Q?", "time": "1"}], "response": []}
    out = convert_record(rec, video_root=os.path.dirname(path))
    vr = decord.VideoReader(path)
    assert len(out["messages"]) == 1 + 2 * (len(vr) // int(vr.get_avg_fps()))  # 151 // 60 = 2 turns
