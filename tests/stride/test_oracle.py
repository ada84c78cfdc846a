"""The oracle detector (ground truth as slot labels) through the real streaming loop, trigger rules and ET-Bench
scoring: a perfect detector must answer each event rounded to its 1-s slots, single-event and multi-event
(F1@0.5 1.0), so a wrong slot time
or trigger rule shows here rather than as a model that seems not to learn; and a little label noise costs a
lot (the first segment is the answer)."""

import numpy as np
import pytest

from stvl_jax.eval import stride_eval
from stvl_jax.infer.stride_runtime import StreamConfig
from stvl_jax.models.stride.config import StrideConfig

WINDOW = StrideConfig(window=16, resolution=1.0, activation_token_id=10, active_token_id=11, inactive_token_id=12)


@pytest.mark.parametrize("chunk,max_window,stride", [(2, 16, 2), (4, 16, 8), (2, 8, 2)])
def test_oracle_scores_one_on_the_synthetic_task(synth_dir, chunk, max_window, stride):
    samples = stride_eval.synthetic_samples(synth_dir, "train")[:12]
    cfg = StreamConfig(chunk_size=chunk, max_window=max_window, stride=stride)
    base = stride_eval.baselines(WINDOW, cfg, samples)
    m = base["oracle"]["tvg"]["stvl-synth"]
    assert m["Total"] == len(samples) and m["Failed"] == 0
    assert m["F1@0.1"] == m["F1@0.5"] == 1.0  # (at 0.7, rounding a 2-3 s event to 1-s slots can miss)
    assert base["always_on"]["tvg"]["stvl-synth"]["F1@0.5"] < 1.0
    res = stride_eval.evaluate(lambda s: stride_eval.OracleStream(s["tgt"], WINDOW, cfg), samples, progress=False)
    for s in res["samples"]:  # the slots whose middle is inside the event, as one trigger
        start, end = s["tgt"]
        first, last = np.ceil(start - 0.5), np.ceil(end - 0.5) - 1
        assert s["segments"] == [[first, last + 1]] and s["kinds"] == ["trigger"], s


def test_oracle_finds_every_event_in_multi_event_mode(synth_dir):
    s = stride_eval.synthetic_samples(synth_dir, "train")[0]
    tal = {**s, "task": "tal", "tgt": [[1.0, 3.0], [5.0, 8.0]]}
    assert s["duration"] >= 10
    res = stride_eval.evaluate(lambda x: stride_eval.OracleStream(x["tgt"], WINDOW, StreamConfig(
        chunk_size=2, max_window=16, stride=2, multi_event=True)), [tal], progress=False)
    np.testing.assert_allclose(res["samples"][0]["segments"], [[1.0, 3.0], [5.0, 8.0]])
    assert res["metrics"]["tal"]["stvl-synth"]["F1@0.7"] == 1.0


def test_a_few_flipped_slots_cost_the_first_segment(synth_dir):
    """5 % of slot labels flipped at random: spurious early spans become the answer of some samples."""
    samples = stride_eval.synthetic_samples(synth_dir, "train")[:12]
    cfg = StreamConfig(chunk_size=2, max_window=16, stride=2)

    class Noisy(stride_eval.OracleStream):
        rng = np.random.default_rng(0)

        def _chunk_predictor(self, prefix, cache, groups):
            predict, built = super()._chunk_predictor(prefix, cache, groups)
            p = predict(None)
            flip = self.rng.random(len(p)) < 0.05
            return (lambda labels: np.where(flip, 1 - p, p)), built

    res = stride_eval.evaluate(lambda s: Noisy(s["tgt"], WINDOW, cfg), samples, progress=False)
    assert res["metrics"]["tvg"]["stvl-synth"]["F1@0.5"] < 0.95
