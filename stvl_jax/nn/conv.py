"""2-D convolutions on channels-last (NHWC) activations, with logical axes.

Kernels are stored `(kh, kw, in / groups, out)` (HWIO, the XLA layout); converters transpose PyTorch's
`(out, in / groups, kh, kw)`. `ConvTranspose2d` covers the non-overlapping case (kernel == stride, no padding:
SAM2's 2x upscaling), which is an exact per-pixel matmul; its kernel is `(kh, kw, in, out)` from PyTorch's
`(in, out, kh, kw)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.nn.params import normal, param, zeros


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    return (int(x), int(x)) if isinstance(x, int) else (int(x[0]), int(x[1]))


class Conv2d(nnx.Module):
    """y = conv(x, kernel) + bias; x: (B, H, W, in) -> (B, H', W', out), PyTorch's padding/stride/groups rules
    (symmetric zero padding `padding` on each side)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, groups: int = 1,
                 use_bias: bool = True, in_axis: str | None = None, out_axis: str | None = None,
                 window_axis: str | None = None, dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                 init_std: float = 0.02, rngs: nnx.Rngs):
        if in_features % groups or out_features % groups:
            raise ValueError(f"conv channels {in_features}->{out_features} not divisible by groups {groups}")
        kh, kw = _pair(kernel_size)
        self.kernel = param(rngs, normal(init_std), (kh, kw, in_features // groups, out_features),
                            (window_axis, window_axis, in_axis, out_axis), param_dtype)
        self.bias = param(rngs, zeros, (out_features,), (out_axis,), param_dtype) if use_bias else None
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.groups = groups
        self.dtype = dtype
        self.precision = precision

    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), self.kernel[...].astype(self.dtype), window_strides=self.stride,
            padding=((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups, precision=self.precision)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class ConvTranspose2d(nnx.Module):
    """Transposed conv with kernel == stride and no padding: every input pixel writes its own (kh, kw) block.
    x: (B, H, W, in) -> (B, H * kh, W * kw, out)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
                 use_bias: bool = True, in_axis: str | None = None, out_axis: str | None = None,
                 dtype=jnp.float32, param_dtype=jnp.float32, precision=None, init_std: float = 0.02,
                 rngs: nnx.Rngs):
        kh, kw = _pair(kernel_size)
        self.kernel = param(rngs, normal(init_std), (kh, kw, in_features, out_features),
                            (None, None, in_axis, out_axis), param_dtype)
        self.bias = param(rngs, zeros, (out_features,), (out_axis,), param_dtype) if use_bias else None
        self.dtype = dtype
        self.precision = precision

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        kh, kw, _, out = self.kernel.shape
        y = jnp.einsum("bhwc,ijco->bhiwjo", x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                       precision=self.precision).reshape(b, h * kh, w * kw, out)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y
