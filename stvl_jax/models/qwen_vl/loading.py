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
from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.checkpoints import open_checkpoint
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.sharding import auto_mesh, logical_axes_of, named_sharding


def abstract_model(config: QwenVLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32
                   ) -> QwenVLForConditionalGeneration:
    """The model with `jax.ShapeDtypeStruct` parameters (shapes, dtypes, logical axes; nothing allocated)."""
    return nnx.eval_shape(lambda: QwenVLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype,
                                                                 rngs=nnx.Rngs(0)))


def param_shapes(config: QwenVLConfig) -> dict[str, tuple[int, ...]]:
    """{"visual/blocks/attn/q_proj/kernel": shape, ...} for every parameter of `config`'s model."""
    return dict(_cached_shapes(config))


@functools.lru_cache(maxsize=8)
def _cached_shapes(config: QwenVLConfig) -> dict[str, tuple[int, ...]]:
    return _shapes_of(abstract_model(config))  # eval_shape of a 2B model: ~1 s, asked for by several checks


def _shapes_of(model: QwenVLForConditionalGeneration) -> dict[str, tuple[int, ...]]:
    return {_key(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _key(path) -> str:
    return "/".join(map(str, path))


def read_config(path: str | Path) -> tuple[QwenVLConfig, dict[str, Any]]:
    """(model config, the whole stvl_config.json) of a checkpoint — for an HF directory, what `stvl convert
    import` would write; `CheckpointError` if it is neither."""
    with open_checkpoint(path) as source:
        return source.config, source.info


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

    mesh: a ('data', 'fsdp', 'tensor') mesh (`stvl_jax.make_mesh` or `jax.make_mesh`, Explicit or Auto axes;
      `model.mesh` is its Auto form); parameters are placed by the logical-axis rules and `model(**batch)` runs
      on it. None: one device (the default device).
    dtype: compute dtype (activations). None = the parameters' dtype as loaded (the most common one).
    param_dtype: cast parameters on restore (None keeps them as stored, e.g. bf16 stays bf16).
    """
    mesh = auto_mesh(mesh)  # Explicit axes (jax.make_mesh's default) -> Auto: sharding.auto_mesh
    with open_checkpoint(path) as source:
        config = source.config
        stored = source.param_specs()
        nominal = jnp.dtype(param_dtype) if param_dtype is not None else \
            checkpoint_io.dominant_dtype(stored.values())
        compute = jnp.dtype(dtype) if dtype is not None else nominal
        model = abstract_model(config, dtype=compute, param_dtype=nominal)
        check_params(config, stored, f"checkpoint {str(path)!r}", want=_shapes_of(model))
        graphdef, state = nnx.split(model)  # Params only: the model keeps no other state
        flat_state = nnx.to_flat_state(state)
        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        targets = {}
        for p, var in flat_state:
            shape, stored_dtype = stored[_key(p)]
            # the rules table decides placement (same as `state_shardings`, per variable)
            sharding = default if mesh is None else named_sharding(mesh, logical_axes_of(var), shape)
            targets[_key(p)] = jax.ShapeDtypeStruct(shape, param_dtype or stored_dtype, sharding=sharding)
        restored = source.restore(targets)
    for p, var in flat_state:
        var.set_value(restored[_key(p)])
    model = nnx.merge(graphdef, state)
    model.mesh = mesh
    return model


def save_model(model_or_params: QwenVLForConditionalGeneration | Mapping[str, Any], config: QwenVLConfig | None,
               path: str | Path, *, source: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a checkpoint that `load_model` reads.

    model_or_params: an nnx model (its Params, sharded or not, are written as they are placed) or a flat
      {"visual/patch_embed/kernel": array, ...} dict of numpy / jax arrays (our layout, stacked layers).
    config: the model config (None with a model: `model.config`).
    source: provenance recorded in stvl_config.json (e.g. the HF config the weights came from).
    """
    if isinstance(model_or_params, nnx.Module):
        config = config or model_or_params.config
        state = nnx.state(model_or_params, nnx.Param)
        flat = {_key(p): v.get_value() for p, v in nnx.to_flat_state(state)}
    else:
        flat = dict(model_or_params)
    if config is None:
        raise ValueError("save_model needs a config with a flat parameter dict")
    check_params(config, {k: (tuple(np.shape(v)),) for k, v in flat.items()}, "parameters to save")
    return checkpoint_io.write_checkpoint(path, config.to_dict(), flat, source=source or {"kind": "stvl-jax"},
                                          overwrite=overwrite)
