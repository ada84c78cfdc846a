"""Fixtures of the Strefer engine tests: a small synthetic set with one multi-shot video, and one engine run."""

import json
import os

import pytest

MULTISHOT = (0, 1, 2)


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


def read_dataset(data_dir: str) -> list[dict]:
    """Every example of a strefer TFDS dataset, sorted by clip id, text features decoded."""
    import tensorflow_datasets as tfds

    src = tfds.data_source("strefer", split="train", data_dir=data_dir)
    out = []
    for i in range(len(src)):
        ex = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in src[i].items()}
        for k in ("metadata", "masklets", "instructions", "record"):
            ex[k] = json.loads(ex[k])
        out.append(ex)
    return sorted(out, key=lambda e: e["clip_id"])


@pytest.fixture(scope="session")
def strefer_run(strefer_set, tmp_path_factory):
    """One in-process DirectRunner run over the set -> (summary, examples)."""
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    out = str(tmp_path_factory.mktemp("strefer_out"))
    summary = run_engine(os.path.join(strefer_set, "videos"), out, EngineConfig())
    return summary, read_dataset(out)
