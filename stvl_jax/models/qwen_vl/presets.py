"""Named model configs: the packaged `configs/models/<name>.yaml` (qwen3vl_tiny, qwen25vl_tiny, qwen3vl_2b,
qwen25vl_3b, stride_tiny), or a YAML file path (see `stvl_jax.packaged`)."""

from __future__ import annotations

from stvl_jax import packaged
from stvl_jax.config_base import load_config
from stvl_jax.models.qwen_vl.config import QwenVLConfig


def available() -> list[str]:
    return packaged.config_names("models")


def load_model_config(name_or_path: str, overrides=()) -> QwenVLConfig:
    """A preset name (see `available()`) or a YAML path -> QwenVLConfig."""
    return load_config(QwenVLConfig, packaged.resolve_config(name_or_path, "models"), overrides)
