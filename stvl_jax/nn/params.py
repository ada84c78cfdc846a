"""Parameter creation with logical axes — the only way layers in this package make parameters.

`param(rngs, init, shape, axes, dtype)` returns an `nnx.Param` whose `logical_axes` metadata drives sharding
(`stvl_jax.sharding`). Under `nnx.eval_shape` nothing is allocated, which is how models are described
abstractly before a sharded `jax.jit(init, out_shardings=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def flat_key(path) -> str:
    """The flat parameter key of a state or pytree path: its parts joined by "/", e.g.
    ("visual", "blocks", "attn", "q_proj", "kernel") -> "visual/blocks/attn/q_proj/kernel" (the checkpoint and
    converter key of every parameter). Accepts nnx paths (str/int parts) and jax key paths (.key/.idx/.name)."""
    parts = []
    for entry in path:
        if isinstance(entry, (str, int)):
            parts.append(str(entry))
            continue
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            raise TypeError(f"unsupported path entry {entry!r}")
    return "/".join(parts)


def flat_params(module_or_state) -> dict[str, nnx.Variable]:
    """{flat key: Param variable} of a module (or an nnx state)."""
    state = module_or_state if isinstance(module_or_state, nnx.State) else nnx.state(module_or_state, nnx.Param)
    return {flat_key(p): v for p, v in nnx.to_flat_state(state)}


def normal(stddev: float = 0.02) -> Initializer:
    return jax.nn.initializers.normal(stddev)


zeros: Initializer = jax.nn.initializers.zeros
ones: Initializer = jax.nn.initializers.ones


def param(
    rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str | None], dtype=jnp.float32
) -> nnx.Param:
    if len(shape) != len(axes):
        raise ValueError(f"param shape {tuple(shape)} and logical axes {tuple(axes)} differ in rank")
    return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(axes))


def prepend_layer_axis(module: nnx.Module) -> None:
    """After `nnx.vmap` stacked a layer `L` times, record the new leading axis as logical `layers`."""
    for _, v in nnx.iter_graph(module):
        if isinstance(v, nnx.Param):
            axes = v.get_metadata().get("logical_axes")
            if axes is not None and len(axes) == v.get_value().ndim - 1:
                v.set_metadata("logical_axes", ("layers", *axes))
