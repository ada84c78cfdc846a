"""`stvl_jax.load_model` / `save_model`: one entry point for every model family, dispatched on the checkpoint.

    SAM2      stvl_config.json format "stvl-jax/sam2", or an HF directory whose config.json model_type is
              `sam2` / `sam2_video`                      -> `stvl_jax.models.sam2.loading`
    VIRST     stvl_config.json format "stvl-jax/virst"  -> `stvl_jax.models.virst.checkpoint`
    Qwen-VL   everything else (its loader names what is wrong with a path that is neither)
                                                          -> `stvl_jax.models.qwen_vl.loading`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model(path: str | Path, **kwargs: Any):
    """The model of a checkpoint (stvl-jax or HF directory), by its family; keyword arguments go to the
    family's loader (Qwen-VL: mesh, dtype, param_dtype; SAM2: mesh, dtype, param_dtype, precision)."""
    from stvl_jax.models.sam2 import loading as sam2

    if sam2.is_sam2(path):
        return sam2.load_model(path, **kwargs)
    from stvl_jax.models.virst import checkpoint as virst

    if virst.is_virst(path):
        return virst.load_model(path, **kwargs)
    from stvl_jax.models.qwen_vl.loading import load_model as qwen_load

    return qwen_load(path, **kwargs)


def _config_module(config: Any, family: str) -> bool:
    return type(config).__module__.startswith(f"stvl_jax.models.{family}.")


def save_model(model_or_params, config=None, path: str | Path | None = None, **kwargs: Any) -> Path:
    """Write a checkpoint that `load_model` reads, by the family of the model (or of `config`)."""
    if path is None:
        raise TypeError("save_model needs a path")
    if _config_module(config if config is not None else getattr(model_or_params, "config", None), "virst"):
        from stvl_jax.models.virst.checkpoint import save_model as virst_save

        return virst_save(model_or_params, path, **kwargs)
    if _config_module(config if config is not None else getattr(model_or_params, "config", None), "sam2"):
        from stvl_jax.models.sam2.loading import save_model as sam2_save

        return sam2_save(model_or_params, config, path, **kwargs)
    from stvl_jax.models.qwen_vl.loading import save_model as qwen_save

    return qwen_save(model_or_params, config, path, **kwargs)
