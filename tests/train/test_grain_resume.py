"""The trainer on the real Grain pipeline (synthetic videos, tiny tokenizer): a run stopped and resumed from its
checkpoint sees exactly the batches and losses of an uninterrupted run (the pipeline's iterator state is part
of the checkpoint)."""

import jax
import numpy as np
import pytest

from stvl_jax.sharding import make_mesh
from stvl_jax.train.metrics import read_metrics
from stvl_jax.train.trainer import Trainer

from .conftest import QUIET, REPO


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from data_pipelines.tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("grain_data")
    generate_dataset(str(root / "synth"), SynthConfig(num_videos=8, seed=5), workers=1)
    return root / "synth" / "captions" / "train.jsonl", build_tiny_tokenizer(str(root / "tok"))


def config(out_dir, index, tok, *extra):
    from stvl_jax.train.config import load_train_config

    return load_train_config(REPO / "configs/train/qwen3vl_tiny_captions.yaml", [
        *QUIET, f"out_dir={out_dir}", f"data.pipeline.index={index}", f"data.pipeline.tokenizer={tok}",
        "steps=5", "data.batch_size=2", "data.pipeline.preprocess.frames.max_frames=4", "checkpoint.every=2",
        "optim.warmup_steps=0",
        *extra])


@pytest.mark.slow
def test_grain_run_resumes_with_the_same_batches(tmp_path, data):
    index, tok = data
    mesh = make_mesh({"fsdp": 2}, devices=jax.devices()[:2])
    full = Trainer(config(tmp_path / "full", index, tok), mesh=mesh)
    full.run()
    Trainer(config(tmp_path / "part", index, tok), mesh=mesh).run(until=3)  # checkpoints at 2 and 3
    resumed = Trainer(config(tmp_path / "part", index, tok, "checkpoint.resume=required"), mesh=mesh)
    assert resumed.resumed_from == 3
    resumed.run()
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    assert [r["data_hash"] for r in b] == [r["data_hash"] for r in a]
    assert len({r["data_hash"] for r in a}) == 5  # real, different batches
    assert [r["loss"] for r in b] == [r["loss"] for r in a]
    assert all(r["tokens"] > 0 and np.isfinite(r["loss"]) for r in a)
