"""Jitted functions of one fixed model, without NNX's per-call graph traversal.

`nnx.jit(f)(model, ...)` flattens the whole module graph on every call and rebuilds it on return (about 5 ms of
Python for the tiny Qwen-VL on CPU, growing with the number of modules) and, unless told otherwise, returns
every parameter as a program output. Streaming inference calls the same model once or more per token, for
thousands of tokens, so `bind_jit(f, model)` splits the model once and jits `f(merge(graphdef, state), ...)`:
a call then costs what a plain `jax.jit` call costs (flattening the state pytree).

The jitted program is shared by every binding of the same function to a model of the same structure (equal
NNX graph definitions), so a new session or stream over a new model object does not recompile. Inference
only: the bound function keeps the parameter arrays it was given, so a model updated in place after binding
(training) is not seen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

_JITTED: dict[tuple, Callable] = {}  # (fn, graphdef, static_argnums, donate_argnums) -> jitted pure function


def bind_jit(fn: Callable, model: nnx.Module, static_argnums: Sequence[int] = (),
             donate_argnums: Sequence[int] = ()) -> Callable:
    """fn(model, *args) -> a jitted g(*args). `static_argnums` and `donate_argnums` index fn's arguments (the
    model is 0): donate a buffer the function returns updated (a KV cache), so XLA writes it in place instead
    of copying it on every call."""
    if 0 in (*static_argnums, *donate_argnums):
        raise ValueError("the model (argument 0) cannot be static or donated")
    graphdef, state = nnx.split(model)
    key = (fn, graphdef, tuple(static_argnums), tuple(donate_argnums))
    jitted = _JITTED.get(key)
    if jitted is None:
        def pure(state, *args):
            return fn(nnx.merge(graphdef, state), *args)

        jitted = _JITTED[key] = jax.jit(pure, static_argnums=key[2], donate_argnums=key[3])
    return functools.partial(jitted, state)
