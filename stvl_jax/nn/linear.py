"""Dense layers and embeddings with logical axes.

Kernels are stored `(in, out...)` (the JAX convention); converters transpose from PyTorch's `(out, in)`.
Attention projections use multi-dimensional outputs, e.g. `(embed, heads, head_dim)`, so tensor parallelism
shards whole heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.nn.params import normal, param, zeros
from stvl_jax.sharding import constrain


class Linear(nnx.Module):
    """y = x @ kernel (+ bias). `in_features` contract the last `len(in_shape)` dims of x.

    kernel: (*in_shape, *out_shape) with logical axes `in_axes + out_axes`, drawn from N(0, init_std^2) as HF's
    `_init_weights` does with the config's `initializer_range`; bias zeros.
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        *,
        in_axes: Sequence[str | None],
        out_axes: Sequence[str | None],
        use_bias: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        precision=None,
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        self.kernel = param(
            rngs, normal(init_std), self.in_shape + self.out_shape, tuple(in_axes) + tuple(out_axes), param_dtype
        )
        self.bias = param(rngs, zeros, self.out_shape, tuple(out_axes), param_dtype) if use_bias else None
        self.dtype = dtype
        self.precision = precision
        self.lora = None  # a `stvl_jax.nn.lora.LoRA` adapter, attached by `add_lora`

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_shape)
        kernel = self.kernel[...].astype(self.dtype)
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel,
            ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())),
            precision=self.precision,
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            y = y + self.lora(x).astype(y.dtype)
        return y


class Embed(nnx.Module):
    """Token embedding table (vocab, embed); `attend` computes logits against it (tied LM head)."""

    def __init__(self, num_embeddings: int, features: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 precision=None, init_std: float = 0.02, rngs: nnx.Rngs):
        self.embedding = param(rngs, normal(init_std), (num_embeddings, features), ("vocab", "embed"), param_dtype)
        self.dtype = dtype
        self.precision = precision

    def __call__(self, ids: jax.Array) -> jax.Array:
        # gather whole rows: all-gather the fsdp shards of the width first (as FSDP does for every weight), so
        # the lookup is a vocab-parallel gather instead of a full rematerialisation of the table
        table = constrain(self.embedding[...], ("vocab", None))
        return jnp.take(table, ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding[...].astype(self.dtype),
                          precision=self.precision)
