"""Fixtures of the Strefer engine tests: a small synthetic set with one multi-shot video, and one engine run."""

import os

import pytest

from strefer_helpers import MULTISHOT, read_dataset


@pytest.fixture(scope="session")
def strefer_set(tmp_path_factory):
    """4 single-shot videos (seed 3) + multishot_00000_00001_00002 (cuts recorded in its annotation)."""
    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from data_pipelines.synthetic.multishot import write_multishot

    out = str(tmp_path_factory.mktemp("strefer_set"))
    cfg = SynthConfig(num_videos=4, seed=3)
    generate_dataset(out, cfg, workers=1)
    write_multishot(out, cfg, MULTISHOT)
    return out


@pytest.fixture(scope="session")
def strefer_run(strefer_set, tmp_path_factory):
    """One in-process DirectRunner run over the set -> (summary, examples)."""
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    out = str(tmp_path_factory.mktemp("strefer_out"))
    summary = run_engine(os.path.join(strefer_set, "videos"), out, EngineConfig())
    return summary, read_dataset(out)
