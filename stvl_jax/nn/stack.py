"""Stacked (scanned) layers: parameters carry a leading `layers` axis and the forward is one `lax.scan`.

Scanning keeps compile time flat in depth (a 28-layer 2B decoder compiles like one layer) and makes remat a
per-layer policy. `scan=False` unrolls the loop instead (same parameters, same arithmetic): on XLA:CPU the
scan's per-layer dynamic slices, zero-initialised residual stacks and their updates cost ~10% of a small
model's training step (research/notes/jax_vs_torch.md), at the price of compile time growing with depth.
`run_stack` can run a contiguous span of the stack, which is how DeepStack taps vision
blocks and injects features after the first decoder layers without unrolling.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from stvl_jax.nn.params import prepend_layer_axis

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def make_stack(factory: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
    """Build `num_layers` copies of `factory(rngs)` with independent init, stacked on a leading axis."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(r):
        return factory(r)

    stack = build(rngs)
    prepend_layer_axis(stack)
    return stack


def run_stack(
    stack: nnx.Module,
    fn: Callable,
    carry,
    xs=None,
    *,
    start: int = 0,
    stop: int | None = None,
    remat: str = "none",
    scan: bool = True,
):
    """Scan layers [start, stop) of `stack`: `carry, y = fn(layer, carry, x)` per layer.

    xs: pytree with leading axis stop - start (per-layer inputs, e.g. a KV-cache slice) or None.
    Returns (carry, ys) with ys stacked on a leading layer axis (None if fn returns None).
    """
    graphdef, state = nnx.split(stack)
    n = jax.tree.leaves(state)[0].shape[0]
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise ValueError(f"layer span [{start}, {stop}) outside a stack of {n}")
    if start == stop:
        return carry, None
    if (start, stop) != (0, n):
        state = jax.tree.map(lambda a: a[start:stop], state)

    def body(c, inputs):
        layer_state, x = inputs
        return fn(nnx.merge(graphdef, layer_state), c, x)

    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose from {sorted(REMAT_POLICIES)}")
    if remat != "none":
        body = jax.checkpoint(body, policy=REMAT_POLICIES[remat], prevent_cse=False)
    return jax.lax.scan(body, carry, (state, xs), unroll=1 if scan else stop - start)
