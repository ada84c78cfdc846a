"""`load_model` / `save_model`: Qwen-VL models from an stvl-jax checkpoint or a Hugging Face directory, and to the
stvl-jax checkpoint format (`stvl_jax.checkpoint_io`).

Loading is abstract-first: the model is described with `nnx.eval_shape` (nothing allocated), shardings come from
the parameters' logical axes through the one rules table (`stvl_jax.sharding.state_shardings`), and the
checkpoint's source (`checkpoints.open_checkpoint`: Orbax, or the safetensors of an HF directory read through the
converter's key map) builds every parameter straight into its sharded `jax.Array` — no full host copy of the model.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax import checkpoint_io
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.qwen_vl.checkpoints import LEGACY_VISION_KEYS, open_checkpoint
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.nn.lora import LoRASpec, add_lora
from stvl_jax.nn.params import flat_key, flat_params
from stvl_jax.sharding import auto_mesh, logical_axes_of, named_sharding


def abstract_model(config: QwenVLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                   preprocessing: PreprocessConfig | None = None, lora: LoRASpec | None = None
                   ) -> QwenVLForConditionalGeneration:
    """The model with `jax.ShapeDtypeStruct` parameters (shapes, dtypes, logical axes; nothing allocated), with
    LoRA adapters when `lora` is given (a LoRA-trained checkpoint)."""

    def build():
        rngs = nnx.Rngs(0)
        model = QwenVLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype,
                                               preprocessing=preprocessing, rngs=rngs)
        if lora is not None:
            add_lora(model, lora, rngs)
        return model

    return nnx.eval_shape(build)


def param_specs(config: QwenVLConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{"visual/blocks/attn/q_proj/kernel": (shape, dtype), ...} for every parameter of `config`'s model (the
    one description of a config's parameters: checkpoints, converters and FLOP counts use it)."""
    return dict(_cached_specs(config))


@functools.lru_cache(maxsize=8)
def _cached_specs(config: QwenVLConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return _specs_of(abstract_model(config))  # eval_shape of a 2B model: ~1 s, asked for by several checks


def _specs_of(model: QwenVLForConditionalGeneration) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {k: (tuple(v.get_value().shape), np.dtype(v.get_value().dtype)) for k, v in flat_params(model).items()}


def param_shapes(config: QwenVLConfig) -> dict[str, tuple[int, ...]]:
    """{"visual/blocks/attn/q_proj/kernel": shape, ...} for every parameter of `config`'s model."""
    return {k: shape for k, (shape, _) in param_specs(config).items()}


def read_config(path: str | Path) -> tuple[QwenVLConfig, dict[str, Any]]:
    """(model config, the whole stvl_config.json) of a checkpoint — for an HF directory, what `stvl convert
    import` would write; `CheckpointError` if it is neither."""
    with open_checkpoint(path) as source:
        return source.config, source.info


def read_preprocessing(path: str | Path, config: QwenVLConfig | None = None,
                       info: Mapping[str, Any] | None = None) -> PreprocessConfig:
    """The preprocessing a checkpoint's model expects (its stvl_config.json "preprocessing"; a checkpoint written
    before that section existed gets its family default, with the mean/std it recorded)."""
    if config is None or info is None:
        config, info = read_config(path)
    where = f"{path}/{checkpoint_io.CONFIG_FILE} preprocessing"
    try:
        if isinstance(info.get("preprocessing"), dict):
            pre = PreprocessConfig.from_dict(info["preprocessing"], source=where)
        else:
            vision = info["model"].get("vision") or {}
            legacy = {k: vision[k] for k in LEGACY_VISION_KEYS if vision.get(k) is not None}
            pre = config.default_preprocessing().updated(legacy, source=where)
        return config.check_preprocessing(pre, where)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def check_params(config: QwenVLConfig, stored: Mapping[str, tuple], where: str,
                 want: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Stored {path: (shape, ...)} must hold exactly the model's parameters with the model's shapes (`want`, when
    the caller has them, else from `config`)."""
    want = param_shapes(config) if want is None else want
    missing = sorted(set(want) - set(stored))
    extra = sorted(set(stored) - set(want))
    if missing:
        raise CheckpointError(f"{where} lacks {len(missing)} parameter(s) its config needs, e.g. {missing[:3]}")
    if extra:
        raise CheckpointError(f"{where} has {len(extra)} parameter(s) its config does not define, e.g. {extra[:3]}")
    for key, shape in want.items():
        got = tuple(stored[key][0])
        if got != shape:
            raise CheckpointError(f"{where}: parameter {key!r} has shape {got}, the config expects {shape}")


def load_model(path: str | Path, *, mesh: jax.sharding.Mesh | None = None, dtype=None, param_dtype=None
               ) -> QwenVLForConditionalGeneration:
    """Load a Qwen-VL model: a checkpoint written by `stvl convert import`, `save_model` or training, or a Hugging
    Face directory (config.json + safetensors, one file or shards + index), read in place without conversion.
    The model's `.preprocessing` is the checkpoint's (`read_preprocessing`): build its inputs with it.

    mesh: a ('data', 'fsdp', 'tensor') mesh (`stvl_jax.make_mesh` or `jax.make_mesh`, Explicit or Auto axes;
      `model.mesh` is its Auto form); parameters are placed by the logical-axis rules and `model(**batch)` runs
      on it. None: one device (the default device).
    dtype: compute dtype (activations). None = the parameters' dtype as loaded (the most common one).
    param_dtype: cast parameters on restore (None keeps them as stored, e.g. bf16 stays bf16).
    """
    mesh = auto_mesh(mesh)  # Explicit axes (jax.make_mesh's default) -> Auto: sharding.auto_mesh
    with open_checkpoint(path) as source:
        config = source.config
        preprocessing = read_preprocessing(path, config, source.info)
        stored = source.param_specs()
        nominal = jnp.dtype(param_dtype) if param_dtype is not None else \
            checkpoint_io.dominant_dtype(stored.values())
        compute = jnp.dtype(dtype) if dtype is not None else nominal
        lora = source.info.get("lora")  # a LoRA-trained checkpoint: the model runs with its adapters
        model = abstract_model(config, dtype=compute, param_dtype=nominal, preprocessing=preprocessing,
                               lora=None if lora is None else LoRASpec.from_dict(lora))
        check_params(config, stored, f"checkpoint {str(path)!r}",
                     want={k: shape for k, (shape, _) in _specs_of(model).items()})
        graphdef, state = nnx.split(model)  # Params only: the model keeps no other state
        flat_state = nnx.to_flat_state(state)
        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        targets = {}
        for p, var in flat_state:
            shape, stored_dtype = stored[flat_key(p)]
            # the rules table decides placement (same as `state_shardings`, per variable)
            sharding = default if mesh is None else named_sharding(mesh, logical_axes_of(var), shape)
            targets[flat_key(p)] = jax.ShapeDtypeStruct(shape, param_dtype or stored_dtype, sharding=sharding)
        restored = source.restore(targets)
    for p, var in flat_state:
        var.set_value(restored[flat_key(p)])
    model = nnx.merge(graphdef, state)
    model.mesh = mesh
    return model


def save_model(model_or_params: QwenVLForConditionalGeneration | Mapping[str, Any], config: QwenVLConfig | None,
               path: str | Path, *, source: Mapping[str, Any] | None = None, overwrite: bool = False,
               preprocessing: PreprocessConfig | None = None, sections: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint that `load_model` reads.

    model_or_params: an nnx model (its Params, sharded or not, are written as they are placed) or a flat
      {"visual/patch_embed/kernel": array, ...} dict of numpy / jax arrays (our layout, stacked layers).
    config: the model config (None with a model: `model.config`).
    source: provenance recorded in stvl_config.json (e.g. the HF config the weights came from).
    preprocessing: how the model's inputs are prepared (None: the model's `.preprocessing`, else the family
      default); sections: task settings to record (e.g. {"stride": {...}}).
    """
    if isinstance(model_or_params, nnx.Module):
        config = config or model_or_params.config
        preprocessing = preprocessing or model_or_params.preprocessing
        flat = {k: v.get_value() for k, v in flat_params(model_or_params).items()}
    else:
        flat = dict(model_or_params)
    if config is None:
        raise ValueError("save_model needs a config with a flat parameter dict")
    check_params(config, {k: (tuple(np.shape(v)),) for k, v in flat.items()}, "parameters to save")
    pre = config.check_preprocessing(preprocessing or config.default_preprocessing())
    return checkpoint_io.write_checkpoint(path, config.to_dict(), flat, source=source or {"kind": "stvl-jax"},
                                          preprocessing=pre.to_dict(), sections=sections, overwrite=overwrite)
