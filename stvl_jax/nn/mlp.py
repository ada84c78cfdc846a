"""Feed-forward blocks: gated (SwiGLU) and plain two-layer MLPs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.nn.linear import Linear

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch nn.GELU() / "gelu"
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, *, act: str = "silu", use_bias: bool = False,
                 embed_axis: str = "embed", mlp_axis: str = "mlp", dtype=jnp.float32, param_dtype=jnp.float32,
                 init_std: float = 0.02, rngs: nnx.Rngs):
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, init_std=init_std, rngs=rngs)
        self.gate_proj = Linear(dim, hidden, in_axes=(embed_axis,), out_axes=(mlp_axis,), **kw)
        self.up_proj = Linear(dim, hidden, in_axes=(embed_axis,), out_axes=(mlp_axis,), **kw)
        self.down_proj = Linear(hidden, dim, in_axes=(mlp_axis,), out_axes=(embed_axis,), **kw)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(activation(self.act)(self.gate_proj(x)) * self.up_proj(x))


class MLP(nnx.Module):
    """fc2(act(fc1(x)))."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, *, act: str = "gelu", use_bias: bool = True,
                 in_axis: str = "embed", mlp_axis: str = "mlp", out_axis: str | None = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, init_std: float = 0.02, rngs: nnx.Rngs):
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, init_std=init_std, rngs=rngs)
        self.fc1 = Linear(dim, hidden, in_axes=(in_axis,), out_axes=(mlp_axis,), **kw)
        self.fc2 = Linear(hidden, out or dim, in_axes=(mlp_axis,), out_axes=(out_axis or in_axis,), **kw)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(activation(self.act)(self.fc1(x)))
