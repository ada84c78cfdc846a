"""`load_model` / `save_model` for SAM2: the Flax model from an stvl-jax checkpoint or a Hugging Face directory,
and to the stvl-jax checkpoint format (`stvl_jax.checkpoint_io`, shared with Qwen-VL: Orbax params/,
integrity.json checksums, stvl_config.json written last).

    CKPT/stvl_config.json  {"format": "stvl-jax/sam2", "family": "sam2" | "sam2_video", "model": <config dict>,
                            "preprocessing": <Sam2PreprocessConfig>, "source": {...}, "params": {...}}

Families: `sam2` is the image model (`Sam2ImageModel`, HF `Sam2Model`); `sam2_video` is image + memory
(`Sam2VideoModel`, HF `Sam2VideoModel`). An HF directory is read through the converters' key map (imported by
name, as the Qwen loader does, so that this package never imports `converters` at import time).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax import checkpoint_io
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
from stvl_jax.nn.params import flat_params

FORMAT = "stvl-jax/sam2"
FAMILIES = ("sam2", "sam2_video")
HF_MODEL_TYPES = FAMILIES  # config.json model_type == our family name


# ------------------------------------------------------------------------------------------ families
def config_from_dict(family: str, data: Mapping[str, Any], where: str):
    """The typed config of `family` from its stvl_config.json "model" dict."""
    try:
        if family == "sam2":
            from stvl_jax.models.sam2.config import Sam2Config

            return Sam2Config.from_dict(dict(data), source=where)
        if family == "sam2_video":
            from stvl_jax.models.sam2.video_config import Sam2VideoConfig

            return Sam2VideoConfig.from_dict(dict(data), source=where)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    raise CheckpointError(f"{where}: unknown SAM2 family {family!r} (expected one of {FAMILIES})")


def family_of_config(config) -> str:
    from stvl_jax.models.sam2.config import Sam2Config

    return "sam2" if isinstance(config, Sam2Config) else "sam2_video"


def abstract_model(family: str, config, *, dtype=jnp.float32, precision=None) -> nnx.Module:
    """The family's model described with `nnx.eval_shape` (nothing allocated)."""
    if family == "sam2":
        from stvl_jax.models.sam2.image_model import abstract_image_model

        return abstract_image_model(config, dtype=dtype, precision=precision)
    from stvl_jax.models.sam2.video_model import abstract_video_model

    return abstract_video_model(config, dtype=dtype, precision=precision)


def param_specs(family: str, config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{our flat param path: (shape, dtype)} of the family's model."""
    return {k: (tuple(v.get_value().shape), np.dtype(v.get_value().dtype))
            for k, v in flat_params(abstract_model(family, config)).items()}


# ------------------------------------------------------------------------------------------ detection
def _json_key(cfg: Path, key: str) -> str | None:
    """cfg[key] of a JSON object file, or None when it is absent or unreadable (the loader names the problem)."""
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def hf_model_type(path: str | Path) -> str | None:
    """config.json's model_type of an HF directory (or of the directory of one .safetensors file), else None."""
    path = Path(path)
    return _json_key((path if path.is_dir() else path.parent) / "config.json", "model_type")


def stvl_format(path: str | Path) -> str | None:
    """The "format" of CKPT/stvl_config.json, or None (not an stvl-jax checkpoint, or unreadable)."""
    return _json_key(Path(path) / checkpoint_io.CONFIG_FILE, "format")


def is_sam2(path: str | Path) -> bool:
    """An stvl-jax SAM2 checkpoint or an HF SAM2 directory (no tensor is read)."""
    fmt = stvl_format(path)
    if fmt is not None:
        return fmt == FORMAT
    return hf_model_type(path) in HF_MODEL_TYPES


# ------------------------------------------------------------------------------------------ read
def read_info(path: str | Path) -> tuple[str, Any, dict[str, Any]]:
    """(family, config, stvl_config.json) of an stvl-jax SAM2 checkpoint; a checkpoint of another model is
    one `CheckpointError` naming it and its format."""
    info = checkpoint_io.read_info(path, formats=(FORMAT,))
    where = f"{path}/{checkpoint_io.CONFIG_FILE}"
    family = info.get("family")
    if family not in FAMILIES:
        raise CheckpointError(f"{where} has family {family!r}, expected one of {FAMILIES}")
    return family, config_from_dict(family, info["model"], where), info


def default_preprocessing(config) -> Sam2PreprocessConfig:
    """SAM2's preprocessing at the model's input size."""
    return Sam2PreprocessConfig(image_size=config.image_size)


def read_preprocessing(info: Mapping[str, Any], where: str, config=None) -> Sam2PreprocessConfig:
    """The checkpoint's "preprocessing" (SAM2's default at the model's input size when it has none); with
    `config`, one whose image_size is not the model's is refused."""
    data = info.get("preprocessing")
    if data is None:
        return default_preprocessing(config) if config is not None else Sam2PreprocessConfig()
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{where} preprocessing is {type(data).__name__}, expected a mapping")
    try:
        pre = Sam2PreprocessConfig.from_dict(dict(data), source=f"{where} preprocessing")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if config is not None and pre.image_size != config.image_size:
        raise CheckpointError(f"{where} preprocessing resizes to {pre.image_size} px but the model's input is "
                              f"{config.image_size} px")
    return pre


def check_params(stored: Mapping[str, tuple], want: Mapping[str, tuple], where: str) -> None:
    """Stored {path: (shape, ...)} must hold exactly the model's parameters with its shapes."""
    missing = sorted(set(want) - set(stored))
    extra = sorted(set(stored) - set(want))
    if missing:
        raise CheckpointError(f"{where} lacks {len(missing)} parameter(s) its config needs, e.g. {missing[:3]}")
    if extra:
        raise CheckpointError(f"{where} has {len(extra)} parameter(s) its config does not define, e.g. {extra[:3]}")
    for key, (shape, *_) in want.items():
        if tuple(stored[key][0]) != tuple(shape):
            raise CheckpointError(f"{where}: parameter {key!r} has shape {tuple(stored[key][0])}, the config "
                                  f"expects {tuple(shape)}")


def _fill(model: nnx.Module, flat: Mapping[str, np.ndarray], param_dtype) -> nnx.Module:
    for key, var in flat_params(model).items():
        value = flat[key]
        var.set_value(jnp.asarray(value, dtype=param_dtype or value.dtype))
    return model


def load_model(path: str | Path, *, mesh=None, dtype=None, param_dtype=None, precision=None,
               allow_pickle: bool = False) -> nnx.Module:
    """The Flax SAM2 model of an stvl-jax checkpoint (`stvl convert import`, `save_model`) or of an HF SAM2
    directory (config.json + safetensors, read in place): `Sam2ImageModel` for family `sam2`, `Sam2VideoModel`
    for `sam2_video`. `.config`, `.family` and `.preprocessing` (`Sam2PreprocessConfig`) come with it.

    dtype: compute dtype (None: the parameters' dtype as stored); param_dtype: cast parameters (None keeps them);
    mesh: place the parameters by the rules table (`stvl_jax.sharding.place_on_mesh`)."""
    path = Path(path)
    if stvl_format(path) is not None or (path / checkpoint_io.PARAMS_DIR).is_dir():
        family, config, info = read_info(path)
        preprocessing = read_preprocessing(info, f"{path}/{checkpoint_io.CONFIG_FILE}", config)
        stored = checkpoint_io.param_metadata(path)
        check_params(stored, param_specs(family, config), f"checkpoint {str(path)!r}")
        flat = checkpoint_io.restore_params(path, {k: None for k in stored})
    elif path.exists() and hf_model_type(path) is not None:
        if hf_model_type(path) not in HF_MODEL_TYPES:
            raise CheckpointError(f"{str(path)!r} is an HF {hf_model_type(path)!r} model, not SAM2 (model_type "
                                  f"one of {HF_MODEL_TYPES})")
        read = importlib.import_module("converters").read_sam2_hf(path, allow_pickle=allow_pickle)
        family, config, flat, preprocessing = read.family, read.config, read.params, read.preprocessing
    else:
        raise CheckpointError(f"{str(path)!r} is neither an stvl-jax SAM2 checkpoint (no "
                              f"{checkpoint_io.CONFIG_FILE}) nor an HF SAM2 directory (no config.json)")
    nominal = np.dtype(param_dtype) if param_dtype is not None else \
        checkpoint_io.dominant_dtype((np.shape(v), v.dtype) for v in flat.values())
    model = abstract_model(family, config, dtype=jnp.dtype(dtype) if dtype is not None else nominal,
                           precision=precision)
    _fill(model, flat, param_dtype)
    model.family, model.preprocessing = family, preprocessing
    if mesh is not None:
        from stvl_jax.sharding import place_on_mesh

        place_on_mesh(model, mesh)
    return model


# ------------------------------------------------------------------------------------------ write
def save_model(model_or_params: nnx.Module | Mapping[str, Any], config, path: str | Path, *,
               family: str | None = None, source: Mapping[str, Any] | None = None,
               preprocessing: Sam2PreprocessConfig | None = None, overwrite: bool = False) -> Path:
    """Write an stvl-jax SAM2 checkpoint that `load_model` reads.

    model_or_params: a SAM2 nnx model or its flat {"mask_decoder/iou_token": array, ...} params (our layout);
    config: its config (None with a model: `model.config`); family: "sam2" / "sam2_video" (None: from the
    config's type); preprocessing: None = the model's `.preprocessing`, else SAM2's default."""
    if isinstance(model_or_params, nnx.Module):
        config = config or model_or_params.config
        preprocessing = preprocessing or getattr(model_or_params, "preprocessing", None)
        flat = {k: v.get_value() for k, v in flat_params(model_or_params).items()}
    else:
        flat = dict(model_or_params)
    if config is None:
        raise ValueError("save_model needs a config with a flat parameter dict")
    family = family or family_of_config(config)
    if family not in FAMILIES:
        raise ValueError(f"unknown SAM2 family {family!r}")
    check_params({k: (tuple(np.shape(v)),) for k, v in flat.items()}, param_specs(family, config),
                 "parameters to save")
    pre = preprocessing or default_preprocessing(config)
    if pre.image_size != config.image_size:
        raise ValueError(f"preprocessing resizes to {pre.image_size} px but the model's input is "
                         f"{config.image_size} px")
    return checkpoint_io.write_checkpoint(path, config.to_dict(), flat, source=source or {"kind": "stvl-jax"},
                                          preprocessing=pre.to_dict(), sections={"family": family},
                                          overwrite=overwrite, fmt=FORMAT)
