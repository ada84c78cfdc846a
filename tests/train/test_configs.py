"""Every shipped train config loads against the schema and names a model that resolves."""

from pathlib import Path

import pytest

from stvl_jax.train.config import load_train_config
from stvl_jax.train.init import model_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_train_config_loads(path):
    cfg = load_train_config(path)
    arch = model_config(cfg.model)
    assert cfg.steps > 0 and arch.text.vocab_size > 0
    assert cfg.optim.groups.trainable()


def test_shipped_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"qwen3vl_tiny_synthetic", "qwen3vl_tiny_captions", "qwen3vl_2b_mfu"}
