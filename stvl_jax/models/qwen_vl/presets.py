"""Named model configs: `configs/models/<name>.yaml` (qwen3vl_tiny, qwen25vl_tiny, qwen3vl_2b, qwen25vl_3b)."""

from __future__ import annotations

from pathlib import Path

from stvl_jax.config_base import load_config
from stvl_jax.errors import ConfigError
from stvl_jax.models.qwen_vl.config import QwenVLConfig

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "models"


def available() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_model_config(name_or_path: str, overrides=()) -> QwenVLConfig:
    """A preset name (see `available()`) or a YAML path -> QwenVLConfig."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"no model preset {name_or_path!r}; available: {available()}")
    return load_config(QwenVLConfig, path, overrides)
