"""`load_model` / `save_model`: Qwen-VL models to and from the stvl-jax checkpoint format (`stvl_jax.checkpoint_io`).

Loading is abstract-first: the model is described with `nnx.eval_shape` (nothing allocated), shardings come from
the parameters' logical axes through the one rules table (`stvl_jax.sharding.state_shardings`), and Orbax
restores every parameter straight into its sharded `jax.Array` — no full host copy of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax import checkpoint_io
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.nn.params import flat_key, flat_params
from stvl_jax.sharding import logical_axes_of, named_sharding

# parameters restored per Orbax call: each call holds read buffers of its arrays until they are placed
RESTORE_BATCH_BYTES = 1 << 30


def abstract_model(config: QwenVLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                   preprocessing: PreprocessConfig | None = None) -> QwenVLForConditionalGeneration:
    """The model with `jax.ShapeDtypeStruct` parameters (shapes, dtypes, logical axes; nothing allocated)."""
    return nnx.eval_shape(lambda: QwenVLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype,
                                                                 preprocessing=preprocessing, rngs=nnx.Rngs(0)))


def param_specs(config: QwenVLConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{"visual/blocks/attn/q_proj/kernel": (shape, dtype), ...} for every parameter of `config`'s model (the
    one description of a config's parameters: checkpoints, converters and FLOP counts use it)."""
    return {k: (tuple(v.get_value().shape), np.dtype(v.get_value().dtype))
            for k, v in flat_params(abstract_model(config)).items()}


def param_shapes(config: QwenVLConfig) -> dict[str, tuple[int, ...]]:
    """{"visual/blocks/attn/q_proj/kernel": shape, ...} for every parameter of `config`'s model."""
    return {k: shape for k, (shape, _) in param_specs(config).items()}


def read_config(path: str | Path) -> tuple[QwenVLConfig, dict[str, Any]]:
    """(model config, the whole stvl_config.json) of a checkpoint; `CheckpointError` if it is not one."""
    info = checkpoint_io.read_info(path)
    model = dict(info["model"])
    if isinstance(model.get("vision"), dict):  # checkpoints before "preprocessing" kept mean/std here
        model["vision"] = {k: v for k, v in model["vision"].items() if k not in _LEGACY_VISION_KEYS}
    try:
        config = QwenVLConfig.from_dict(model, source=f"{path}/{checkpoint_io.CONFIG_FILE}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return config, info


_LEGACY_VISION_KEYS = ("image_mean", "image_std")


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
            legacy = {k: vision[k] for k in _LEGACY_VISION_KEYS if vision.get(k) is not None}
            pre = config.default_preprocessing().updated(legacy, source=where)
        return config.check_preprocessing(pre, where)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def check_params(config: QwenVLConfig, stored: Mapping[str, tuple], where: str) -> None:
    """Stored {path: (shape, ...)} must hold exactly the model's parameters with the model's shapes."""
    want = param_shapes(config)
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
    """Load a Qwen-VL checkpoint written by `stvl convert import`, `save_model` or training. The model's
    `.preprocessing` is the checkpoint's (`read_preprocessing`): build its inputs with it.

    mesh: a ('data', 'fsdp', 'tensor') mesh (`stvl_jax.make_mesh`); parameters are placed by the logical-axis
      rules and `model(**batch)` runs on it. None: one device (the default device).
    dtype: compute dtype (activations). None = the parameters' dtype as loaded (the most common one).
    param_dtype: cast parameters on restore (None keeps them as stored, e.g. bf16 stays bf16).
    """
    config, info = read_config(path)
    preprocessing = read_preprocessing(path, config, info)
    stored = checkpoint_io.param_metadata(path)
    check_params(config, stored, f"checkpoint {str(path)!r}")
    nominal = jnp.dtype(param_dtype) if param_dtype is not None else \
        checkpoint_io.dominant_dtype(stored.values())
    compute = jnp.dtype(dtype) if dtype is not None else nominal
    model = abstract_model(config, dtype=compute, param_dtype=nominal, preprocessing=preprocessing)
    graphdef, state = nnx.split(model)  # Params only: the model keeps no other state
    flat_state = nnx.to_flat_state(state)
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    targets = {}
    for p, var in flat_state:
        shape, stored_dtype = stored[flat_key(p)]
        # the rules table decides placement (same as `state_shardings`, per variable)
        sharding = default if mesh is None else named_sharding(mesh, logical_axes_of(var), shape)
        targets[flat_key(p)] = jax.ShapeDtypeStruct(shape, param_dtype or stored_dtype, sharding=sharding)
    restored = {}
    for batch in _batches(targets, RESTORE_BATCH_BYTES):  # bounds Orbax's transient host buffers
        restored.update(checkpoint_io.restore_params(path, batch))
    for p, var in flat_state:
        var.set_value(restored[flat_key(p)])
    model = nnx.merge(graphdef, state)
    model.mesh = mesh
    return model


def _batches(targets: Mapping[str, jax.ShapeDtypeStruct], limit: int) -> list[dict[str, jax.ShapeDtypeStruct]]:
    out: list[dict] = [{}]
    size = 0
    for key, t in targets.items():
        nbytes = int(np.prod(t.shape)) * jnp.dtype(t.dtype).itemsize
        if out[-1] and size + nbytes > limit:
            out.append({})
            size = 0
        out[-1][key] = t
        size += nbytes
    return out


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
