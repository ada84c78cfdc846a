"""Every shipped train config loads against the schema and names a model that resolves."""

from pathlib import Path

import pytest

from stvl_jax.train.config import load_train_config
from stvl_jax.train.init import model_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_train_config_loads(path):
    from stvl_jax.train.sam2_config import config_task, is_sam2_config, load_sam2_train_config, resolve_model_config

    if config_task(path) == "virst":  # task: virst (VIRST referring segmentation)
        from stvl_jax.train.virst_config import load_virst_train_config, resolve_virst_model

        cfg = load_virst_train_config(path)
        assert cfg.steps > 0 and resolve_virst_model(cfg.model).seg.token_id is not None
        return
    if is_sam2_config(path):  # task: sam2 (SAM2 video segmentation)
        cfg = load_sam2_train_config(path)
        assert cfg.steps > 0 and resolve_model_config(cfg.model).image_size > 0 and cfg.optim.groups.trainable()
        return
    cfg = load_train_config(path)
    arch = model_config(cfg.model)
    assert cfg.steps > 0 and arch.text.vocab_size > 0
    assert cfg.optim.groups.trainable()


def test_shipped_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"qwen3vl_tiny_synthetic", "qwen3vl_tiny_captions", "qwen3vl_2b_mfu"}
