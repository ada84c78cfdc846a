"""`stride_eval.evaluate` and `stvl stream` stream each video with the released STRIDE evaluation's frames and
decoded timestamps (`data_pipelines.video.stream_indices`) and hand those timestamps to the runtime, as upstream's
`detect(frames, timestamps)` gets them (`stvl stream`'s answerer too). The video: 300 frames at 30000/1001 fps,
streamed at 1 fps -> frame indices round(k * 29.97003) for k < ceil(300 / 29.97003) = 11: 0, 30, ..., 270, then
300 clipped to 299; times index * 1001 / 30000 = 0, 1.001, 2.002, ..., 9.009, 9.976633 s (by hand; floor and
index / fps would give 10 frames 0, 29, ..., 269 at 0..9 s)."""

import fractions
import json

import numpy as np
import pytest

from stvl_jax.eval import stride_eval
from stvl_jax.infer.stride_runtime import StreamConfig
from stvl_jax.models.stride.config import StrideConfig
from stvl_jax.models.stride.triggers import Segment
from video_files import write_video

WINDOW = StrideConfig(window=8, resolution=1.0, activation_token_id=10, active_token_id=11, inactive_token_id=12)
CFG = StreamConfig(chunk_size=2, max_window=8, stride=2)
INDICES = [30 * k for k in range(10)] + [299]
TIMES = np.array(INDICES) * 1001 / 30000


@pytest.fixture(scope="module")
def ntsc_sample(tmp_path_factory):
    path = write_video(str(tmp_path_factory.mktemp("ntsc") / "ntsc.mp4"), "mpeg4", fractions.Fraction(30000, 1001),
                       300)
    return {"idx": 0, "task": "tvg", "source": "s", "video": path, "duration": 300 * 1001 / 30000, "q": "q",
            "tgt": [2.505, 6.5], "record": "ntsc"}


class Recording(stride_eval.ConstantStream):
    """The always-off stream, recording (frame count, times) of each run in `seen`."""

    def __init__(self, seen: list, cfg: StreamConfig):
        super().__init__(0.0, WINDOW, cfg)
        self.seen = seen

    def run(self, frames, query, on_chunk=None, times=None):
        self.seen.append((len(frames), None if times is None else np.asarray(times)))
        return super().run(frames, query, on_chunk, times=times)


def test_eval_passes_the_decoded_timestamps_to_the_runtime(ntsc_sample):
    seen = []
    for zero in (False, True):
        res = stride_eval.evaluate(lambda s: Recording(seen, CFG), [ntsc_sample], progress=False, zero_pixels=zero)
        n, times = seen[-1]
        assert n == 11 and times is not None
        np.testing.assert_allclose(times, TIMES, rtol=0, atol=1e-9)
        s = res["samples"][0]
        # chunks of 2 frames end at frames 1, 3, 5, 7, 9; the 11th frame makes the view 10 frames again (pairs)
        np.testing.assert_allclose([c["t"] for c in s["timeline"]], TIMES[[1, 3, 5, 7, 9, 9]], rtol=0, atol=1e-9)
        # always-off: the fallback [0, time of the last decoded frame] = [0, 299 * 1001 / 30000]
        np.testing.assert_allclose(s["segments"], [[0.0, 9.976633]], rtol=0, atol=1e-6)


@pytest.mark.parametrize("start,expected", [
    # view = frames 0..7, t_last = 7 * 1.001 = 7.007: slot starts 7.007 - 8 + i = -0.993, 0.007, ..., 6.007, middles
    # -0.493, 0.507, 1.507, 2.507, 3.507, 4.507, 5.507, 6.507 -> inside [2.505, 6.5): slots 3..6
    (0, [0, 0, 0, 1, 1, 1, 1, 0]),
    # view = frames 2..9, t_last = 9.009: starts 1.009 + i, middles 1.509, 2.509, ..., 8.509 -> slots 1..4
    (2, [0, 1, 1, 1, 1, 0, 0, 0]),
])
def test_oracle_labels_the_slots_of_the_decoded_times(start, expected):
    """The oracle's slot grid follows the stream's times, as the loop's does (with index / fps instead, the
    middles would be whole seconds + 0.5 and 2.5 would fall outside: [0,0,0,0,1,1,1,0] and [0,0,1,1,1,0,0,0])."""
    oracle = stride_eval.OracleStream([[2.505, 6.5]], WINDOW, CFG)
    frames = np.zeros((11, 4, 4, 3), np.uint8)
    oracle._prepare(frames, TIMES)
    oracle._mega_prefix("q", frames, start, start + 8)
    predict, _ = oracle._chunk_predictor(None, None, 4)  # 4 frame pairs: the view's 8 frames
    np.testing.assert_array_equal(predict(None), expected)


def test_stvl_stream_reads_the_eval_frames_and_passes_their_times(ntsc_sample, tmp_path, monkeypatch, capsys):
    from stvl_jax.cli import main as stvl
    from stvl_jax.infer import cli

    seen = []
    monkeypatch.setattr(cli, "load_tokenizer", lambda *args: None)
    monkeypatch.setattr(cli, "load_args_detector", lambda args, tok, cfg: Recording(seen, cfg))
    out = tmp_path / "stream"
    assert stvl(["stream", ntsc_sample["video"], "--query", "q", "--ckpt", str(tmp_path), "--fps", "1",
                 "--chunk", "2", "--max-window", "8", "--out", str(out)]) == 0
    assert "11 frames at 1 fps" in capsys.readouterr().out  # floor would read 10
    (n, times), = seen
    assert n == 11
    np.testing.assert_allclose(times, TIMES, rtol=0, atol=1e-9)
    chunks = json.loads((out / "stream.json").read_text())["chunks"]
    np.testing.assert_allclose([c["t_last"] for c in chunks], TIMES[[1, 3, 5, 7, 9, 9]], rtol=0, atol=1e-9)


def test_the_answerer_gets_the_frames_up_to_the_trigger_with_their_times():
    """A trigger on the chunk whose last frame in view is frame 5 (t = 5 * 1.001 = 5.005 s): the answerer sees
    frames 0..5 at 0, 1.001, 2.002, 3.003, 4.004, 5.005 s (the previous index / fps gave 0, 1, ..., 5 s)."""
    from stvl_jax.infer.stride_assistant import ProactiveAssistant

    class TriggerOnFrame5(Recording):
        def run(self, frames, query, on_chunk=None, times=None):
            def add_trigger(rec):
                if rec.t_last == TIMES[5]:
                    rec.triggers.append(Segment(2.0, 4.0, rec.t_last))
                on_chunk(rec)

            return super().run(frames, query, add_trigger, times=times)

    class Answerer:
        calls = []

        def answer(self, frames, times, question):
            self.calls.append((frames, np.asarray(times), question))
            return "it stops", len(frames)

    frames = np.arange(11, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    result, answers = ProactiveAssistant(TriggerOnFrame5([], CFG), Answerer()).run(frames, "q", times=TIMES)
    (shown, times, question), = Answerer.calls
    assert question == "q" and shown[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(times, [0.0, 1.001, 2.002, 3.003, 4.004, 5.005], rtol=0, atol=1e-9)
    (a,) = answers
    assert (a.time, a.segment, a.text, a.frames) == (TIMES[5], (2.0, 4.0), "it stops", 6)
    assert len(result.chunks) == 6
