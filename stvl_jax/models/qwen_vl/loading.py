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
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.sharding import auto_mesh, logical_axes_of, named_sharding

# parameters restored per Orbax call: each call holds read buffers of its arrays until they are placed
RESTORE_BATCH_BYTES = 1 << 30


def abstract_model(config: QwenVLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32
                   ) -> QwenVLForConditionalGeneration:
    """The model with `jax.ShapeDtypeStruct` parameters (shapes, dtypes, logical axes; nothing allocated)."""
    return nnx.eval_shape(lambda: QwenVLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype,
                                                                 rngs=nnx.Rngs(0)))


def param_shapes(config: QwenVLConfig) -> dict[str, tuple[int, ...]]:
    """{"visual/blocks/attn/q_proj/kernel": shape, ...} for every parameter of `config`'s model."""
    state = nnx.state(abstract_model(config), nnx.Param)
    return {_key(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(state)}


def _key(path) -> str:
    return "/".join(map(str, path))


def read_config(path: str | Path) -> tuple[QwenVLConfig, dict[str, Any]]:
    """(model config, the whole stvl_config.json) of a checkpoint; `CheckpointError` if it is not one."""
    info = checkpoint_io.read_info(path)
    try:
        config = QwenVLConfig.from_dict(info["model"], source=f"{path}/{checkpoint_io.CONFIG_FILE}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return config, info


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
    """Load a Qwen-VL checkpoint written by `stvl convert import`, `save_model` or training.

    mesh: a ('data', 'fsdp', 'tensor') mesh (`stvl_jax.make_mesh` or `jax.make_mesh`, Explicit or Auto axes;
      `model.mesh` is its Auto form); parameters are placed by the logical-axis rules and `model(**batch)` runs
      on it. None: one device (the default device).
    dtype: compute dtype (activations). None = the parameters' dtype as loaded (the most common one).
    param_dtype: cast parameters on restore (None keeps them as stored, e.g. bf16 stays bf16).
    """
    mesh = auto_mesh(mesh)  # Explicit axes (jax.make_mesh's default) -> Auto: sharding.auto_mesh
    config, _ = read_config(path)
    stored = checkpoint_io.param_metadata(path)
    check_params(config, stored, f"checkpoint {str(path)!r}")
    nominal = jnp.dtype(param_dtype) if param_dtype is not None else \
        checkpoint_io.dominant_dtype(stored.values())
    compute = jnp.dtype(dtype) if dtype is not None else nominal
    model = abstract_model(config, dtype=compute, param_dtype=nominal)
    graphdef, state = nnx.split(model)  # Params only: the model keeps no other state
    flat_state = nnx.to_flat_state(state)
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    targets = {}
    for p, var in flat_state:
        shape, stored_dtype = stored[_key(p)]
        # the rules table decides placement (same as `state_shardings`, per variable)
        sharding = default if mesh is None else named_sharding(mesh, logical_axes_of(var), shape)
        targets[_key(p)] = jax.ShapeDtypeStruct(shape, param_dtype or stored_dtype, sharding=sharding)
    restored = {}
    for batch in _batches(targets, RESTORE_BATCH_BYTES):  # bounds Orbax's transient host buffers
        restored.update(checkpoint_io.restore_params(path, batch))
    for p, var in flat_state:
        var.set_value(restored[_key(p)])
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
