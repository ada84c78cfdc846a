"""`load_model` / `save_model` for VIRST: the stvl-jax checkpoint format (`stvl_jax.checkpoint_io`, shared with
Qwen-VL and SAM2: Orbax params/, integrity.json, stvl_config.json written last).

    CKPT/stvl_config.json  {"format": "stvl-jax/virst", "model": <VirstConfig dict>,
                            "preprocessing": {"llm": <PreprocessConfig>, "sam2": <Sam2PreprocessConfig>}, ...}

Parameters are the flat paths of `VirstModel` (`llm/...`, `sam2/...`, `seg_prompter/...`, `initial_fusion/...`).
An upstream VIRST .pt is imported with `converters.virst_pt.import_virst_pt` into a model built from a config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from stvl_jax import checkpoint_io
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
from stvl_jax.models.sam2.loading import check_params, stvl_format
from stvl_jax.models.virst.config import VirstConfig
from stvl_jax.nn.params import flat_params

FORMAT = "stvl-jax/virst"


def is_virst(path: str | Path) -> bool:
    """An stvl-jax VIRST checkpoint (no tensor is read)."""
    return stvl_format(path) == FORMAT


def param_specs(config: VirstConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    from stvl_jax.models.virst.model import abstract_virst_model

    return {k: (tuple(v.get_value().shape), np.dtype(v.get_value().dtype))
            for k, v in flat_params(abstract_virst_model(config)).items()}


def _preprocessing(info: Mapping[str, Any], config: VirstConfig, where: str):
    data = info.get("preprocessing") or {}
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{where} preprocessing is {type(data).__name__}, expected a mapping")
    try:
        llm = PreprocessConfig.from_dict(data["llm"], source=f"{where} preprocessing.llm") if "llm" in data \
            else config.llm.default_preprocessing()
        sam2 = Sam2PreprocessConfig.from_dict(data.get("sam2") or {"image_size": config.sam2.image.image_size},
                                              source=f"{where} preprocessing.sam2")
        config.llm.check_preprocessing(llm, f"{where} preprocessing.llm")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if sam2.image_size != config.sam2.image.image_size:
        raise CheckpointError(f"{where} preprocessing.sam2 resizes to {sam2.image_size} px but SAM2's input is "
                              f"{config.sam2.image.image_size} px")
    return llm, sam2


def load_model(path: str | Path, *, mesh=None, dtype=None, param_dtype=None):
    """The `VirstModel` of an stvl-jax VIRST checkpoint, with `.sam2_preprocessing` (its LLM's is
    `model.llm.preprocessing`). dtype: compute dtype (None: the stored parameters'); param_dtype: cast them."""
    from stvl_jax.models.virst.model import abstract_virst_model

    path = Path(path)
    info = checkpoint_io.read_info(path, formats=(FORMAT,))
    where = f"{path}/{checkpoint_io.CONFIG_FILE}"
    try:
        config = VirstConfig.from_dict(info["model"], source=where)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    llm_pre, sam2_pre = _preprocessing(info, config, where)
    stored = checkpoint_io.param_metadata(path)
    check_params(stored, param_specs(config), f"checkpoint {str(path)!r}")
    flat = checkpoint_io.restore_params(path, {k: None for k in stored})
    nominal = np.dtype(param_dtype) if param_dtype is not None else \
        checkpoint_io.dominant_dtype((np.shape(v), v.dtype) for v in flat.values())
    model = abstract_virst_model(config, dtype=jnp.dtype(dtype) if dtype is not None else nominal,
                                 preprocessing=llm_pre)
    for key, var in flat_params(model).items():
        var.set_value(jnp.asarray(flat[key], dtype=param_dtype or flat[key].dtype))
    model.sam2_preprocessing = sam2_pre
    if mesh is not None:
        from stvl_jax.sharding import place_on_mesh

        place_on_mesh(model, mesh)
    return model


def save_model(model, path: str | Path, *, source: Mapping[str, Any] | None = None, overwrite: bool = False
               ) -> Path:
    """Write `model` (a VirstModel) as an stvl-jax checkpoint that `load_model` reads."""
    config: VirstConfig = model.config
    flat = {k: v.get_value() for k, v in flat_params(model).items()}
    check_params({k: (tuple(np.shape(v)),) for k, v in flat.items()}, param_specs(config), "parameters to save")
    sam2_pre = getattr(model, "sam2_preprocessing", None) or Sam2PreprocessConfig(
        image_size=config.sam2.image.image_size)
    pre = {"llm": model.llm.preprocessing.to_dict(), "sam2": sam2_pre.to_dict()}
    return checkpoint_io.write_checkpoint(path, config.to_dict(), flat, source=source or {"kind": "stvl-jax"},
                                          preprocessing=pre, overwrite=overwrite, fmt=FORMAT)
