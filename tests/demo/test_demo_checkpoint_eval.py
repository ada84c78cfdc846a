"""The demo's model is evaluated from its checkpoint, and the checkpoint carries the preprocessing it was trained
at: `stvl eval streamo --ckpt <the demo's checkpoint>` with no preprocessing flags gives exactly the demo's own
evaluation numbers, and feeds the model frames at the trained resolution (56 x 56: a (1, 4, 4) patch grid), not
at the Qwen2.5-VL family default (a 128 x 128 synthetic frame would be (1, 9, 9))."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A demo-sized run on 10 videos, 2 training steps: (out dir, tokenizer dir, final checkpoint, streams)."""
    from stvl_jax.demo.streamo import final_checkpoint, train_streamo, write_streams

    out = str(tmp_path_factory.mktemp("demo"))
    data = os.path.join(out, "synth")
    generate_dataset(data, SynthConfig(num_videos=10, seed=1), workers=1)
    tok = build_tiny_tokenizer(os.path.join(out, "tokenizer"))
    streams = write_streams(data, os.path.join(out, "streamo"), splits=("train", "val"))
    _, summary = train_streamo(out, streams, tok, steps=2, log=lambda *a: None)
    return out, tok, final_checkpoint(summary), streams


def test_training_writes_the_preprocessing_into_the_checkpoint(demo_run):
    from stvl_jax.models.qwen_vl.loading import read_preprocessing

    _, _, ckpt, _ = demo_run
    pre = read_preprocessing(ckpt)
    assert pre.family == "qwen2_5_vl" and (pre.image.min_pixels, pre.image.max_pixels) == (3136, 3136)


def test_eval_cli_on_the_demo_checkpoint_equals_the_demo_and_uses_the_trained_resolution(demo_run, monkeypatch):
    import stvl_jax
    from stvl_jax.cli import main
    from stvl_jax.demo.streamo import evaluate
    from stvl_jax.infer.session import ChatSession
    from stvl_jax.sharding import make_mesh

    out, tok, ckpt, streams = demo_run
    model = stvl_jax.load_model(ckpt, mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    demo = evaluate(model, tok, streams["val"], os.path.join(out, "demo_eval"), limit=1, log=lambda *a: None)

    grids = []
    append = ChatSession.append

    def spy(self, ids, **kw):
        if kw.get("image_grid_thw") is not None:
            grids.extend(np.asarray(kw["image_grid_thw"]).reshape(-1, 3).tolist())
        return append(self, ids, **kw)

    monkeypatch.setattr(ChatSession, "append", spy)
    assert main(["eval", "streamo", "--ckpt", ckpt, "--data", out, "--split", "val", "--tokenizer", tok,
                 "--out", os.path.join(out, "cli_eval"), "--limit", "1"]) == 0
    cli = json.loads(open(os.path.join(out, "cli_eval", "streamo_metrics.json")).read())
    assert grids and all(g == [1, 4, 4] for g in grids)  # 56 x 56 frames, as trained
    def scores(m):  # every number but the wall-clock latency
        return {k: v for k, v in json.loads(json.dumps(m)).items() if k != "median_turn_latency_ms"}

    assert scores(cli["metrics"]) == scores(demo["metrics"])
    assert [s["outputs"] for s in cli["streams"]] == [s["outputs"] for s in demo["streams"]]
