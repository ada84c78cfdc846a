"""RMSNorm and LayerNorm with the exact HF/PyTorch numerics (statistics in fp32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.nn.params import ones, param, zeros


class RMSNorm(nnx.Module):
    """x * rsqrt(mean(x^2) + eps) * weight; normalised in fp32, cast back to the input dtype before the scale
    (the Qwen/Llama order, which matters in bf16)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, axis_name: str = "norm", param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.weight = param(rngs, ones, (dim,), (axis_name,), param_dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(dtype) * h.astype(dtype)


class LayerNorm(nnx.Module):
    """Standard LayerNorm with scale and bias; statistics in fp32."""

    def __init__(self, dim: int, *, eps: float = 1e-6, axis_name: str = "norm", param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.weight = param(rngs, ones, (dim,), (axis_name,), param_dtype)
        self.bias = param(rngs, zeros, (dim,), (axis_name,), param_dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        h = x.astype(jnp.float32)
        mean = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(var + self.eps)
        return (h * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(dtype)
