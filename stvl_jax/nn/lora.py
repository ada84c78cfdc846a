"""LoRA adapters on `Linear` layers (PEFT's LoRA: y = x W + b + (alpha / r) * dropout(x) A B).

`add_lora(model, spec, rngs)` attaches a `LoRA` submodule to every targeted `Linear` (attribute `lora`), so a
targeted kernel `.../q_proj/kernel` gains `.../q_proj/lora/a` and `.../q_proj/lora/b`; base parameter paths
are unchanged (checkpoints and converters keep their keys).

    a: (*lead, *in_shape, r)   logical axes (*lead_axes, *in_axes, "lora_rank")   PEFT lora_A = a^T
    b: (*lead, r, *out_shape)  logical axes (*lead_axes, "lora_rank", *out_axes)  PEFT lora_B = b^T

`lead` is the stacked `layers` axis of scanned layers. Initialisation follows PEFT: A kaiming-uniform with
a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in = prod(in_shape)), B zeros, so a fresh adapter
leaves the model's output unchanged. Dropout applies to the adapter's input only, and only when a dropout key
has been set on the model (`set_dropout_keys`, done by the training step); inference never drops.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import ConfigError
from stvl_jax.nn.params import param, zeros

RANK_AXIS = "lora_rank"
# which Linear layers each `modules` choice covers: the decoder layers and the ViT blocks (not the mergers, the
# embeddings or the LM head, which PEFT recipes train fully when they train them), wherever the Qwen-VL model
# sits in a larger one (e.g. VIRST's)
SCOPES: dict[str, tuple[str, ...]] = {
    "llm": ("/language_model/layers/",),
    "vision": ("/visual/blocks/",),
    "all": ("/language_model/layers/", "/visual/blocks/"),
}


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    """What a model's adapters are: rank r, alpha (scale alpha / r), input dropout, the targeted Linear names
    (their attribute names, e.g. q_proj) within the `modules` scope."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    modules: str = "llm"

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets),
                "modules": self.modules}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LoRASpec":
        return cls(int(data["rank"]), float(data["alpha"]), float(data.get("dropout", 0.0)),
                   tuple(data["targets"]), str(data.get("modules", "llm")))


class LoRAKey(nnx.Variable):
    """Raw uint32 dropout keys (*lead, 2) of one adapter, set for a training forward only."""


def kaiming_uniform(fan_in: int):
    """PEFT's lora_A init: torch kaiming_uniform_(a=sqrt(5)) on a (r, fan_in) weight -> U(-1/sqrt(fan_in), ...)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class LoRA(nnx.Module):
    """The low-rank path of one Linear: x (..., *in_shape) -> (..., *out_shape)."""

    def __init__(self, kernel_axes, lead: tuple[int, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 spec: LoRASpec, *, dtype, param_dtype, precision, rngs: nnx.Rngs):
        nl, ni = len(lead), len(in_shape)
        lead_axes, in_axes, out_axes = kernel_axes[:nl], kernel_axes[nl:nl + ni], kernel_axes[nl + ni:]
        r = spec.rank
        self.a = param(rngs, kaiming_uniform(int(np.prod(in_shape))), (*lead, *in_shape, r),
                       (*lead_axes, *in_axes, RANK_AXIS), param_dtype)
        self.b = param(rngs, zeros, (*lead, r, *out_shape), (*lead_axes, RANK_AXIS, *out_axes), param_dtype)
        self.n_in = ni
        self.scale = spec.scale
        self.dropout = spec.dropout
        self.key = None  # LoRAKey while a training forward runs with dropout
        self.dtype = dtype
        self.precision = precision

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        if self.key is not None and self.dropout > 0:
            keep = jax.random.bernoulli(self.key[...], 1.0 - self.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - self.dropout), jnp.zeros((), x.dtype))
        a, b = self.a[...].astype(self.dtype), self.b[...].astype(self.dtype)
        n = self.n_in
        h = jax.lax.dot_general(x, a, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())),
                                precision=self.precision)
        y = jax.lax.dot_general(h, b, (((h.ndim - 1,), (0,)), ((), ())), precision=self.precision)
        return y * jnp.asarray(self.scale, y.dtype)


def _linears(model: nnx.Module):
    from stvl_jax.nn.linear import Linear

    for path, node in nnx.iter_graph(model):
        if isinstance(node, Linear):
            yield "/" + "/".join(map(str, path)) + "/", node


def _in_scope(path: str, modules: str) -> bool:
    return any(scope in path for scope in SCOPES[modules])


def target_names(model: nnx.Module, modules: str) -> list[str]:
    """The Linear attribute names a spec may target in `modules` of this model (sorted)."""
    return sorted({p.rstrip("/").rsplit("/", 1)[-1] for p, _ in _linears(model) if _in_scope(p, modules)})


def add_lora(model: nnx.Module, spec: LoRASpec, rngs: nnx.Rngs) -> list[str]:
    """Attach adapters (in place) to every Linear of `model` named in `spec.targets` under `spec.modules`.
    Returns the adapted module paths. A target that matches no Linear there is one ConfigError line."""
    if spec.modules not in SCOPES:
        raise ConfigError(f"lora.modules {spec.modules!r} is not one of {sorted(SCOPES)}")
    chosen = [(p, lin) for p, lin in _linears(model) if _in_scope(p, spec.modules) and
              p.rstrip("/").rsplit("/", 1)[-1] in spec.targets]
    missing = sorted(set(spec.targets) - {p.rstrip("/").rsplit("/", 1)[-1] for p, _ in chosen})
    if missing:
        raise ConfigError(f"lora.targets {missing} name no linear layer in lora.modules={spec.modules!r} of this "
                          f"model; known: {target_names(model, spec.modules)}")
    for _, lin in chosen:
        kernel = lin.kernel
        axes = kernel.get_metadata().get("logical_axes") or (None,) * kernel.get_value().ndim
        lead = tuple(kernel.get_value().shape[:kernel.get_value().ndim - len(lin.in_shape) - len(lin.out_shape)])
        lin.lora = nnx.data(LoRA(tuple(axes), lead, lin.in_shape, lin.out_shape, spec, dtype=lin.dtype,
                        param_dtype=kernel.get_value().dtype, precision=lin.precision, rngs=rngs))
    return [p.strip("/") for p, _ in chosen]


def set_dropout_keys(model: nnx.Module, key: jax.Array, *, rows: bool = False) -> None:
    """Give every adapter its own dropout keys from raw key `key` (one per stacked layer); traceable.
    rows: `key` is (R, 2), one raw key per row of a batch that is `nnx.vmap`-ed over one model (the keys get a
    leading R axis, split by `LoRAKey: 0` in the vmap's StateAxes), so that each row draws its own masks."""
    for i, (_, lin) in enumerate(_linears(model)):
        lora = getattr(lin, "lora", None)
        if lora is None or lora.dropout <= 0:
            continue
        lead = lora.a.get_value().shape[:lora.a.get_value().ndim - lora.n_in - 1]

        def draw(k, i=i, lead=lead):
            keys = jax.random.split(jax.random.fold_in(k, i), int(np.prod(lead)))
            return keys.reshape(*lead, keys.shape[-1])

        lora.key = nnx.data(LoRAKey(jax.vmap(draw)(key) if rows else draw(key)))


# ------------------------------------------------------------------------------------------ flat parameters
def is_adapter(path: str) -> bool:
    """True for an adapter parameter path ('.../q_proj/lora/a' or '/b')."""
    return path.endswith(("/lora/a", "/lora/b"))


def adapter_kernels(paths) -> dict[str, tuple[str, str]]:
    """{base kernel path: (a path, b path)} of the adapters among flat parameter `paths`."""
    paths = set(paths)
    out = {}
    for p in paths:
        if p.endswith("/lora/a"):
            base = p[: -len("lora/a")]
            out[base + "kernel"] = (p, base + "lora/b")
    return out


def lora_delta(a: np.ndarray, b: np.ndarray, kernel_ndim: int, scale: float) -> np.ndarray:
    """scale * A B in the kernel's layout (*lead, *in_shape, *out_shape), float32, from stacked numpy a, b."""
    lead = a.ndim + b.ndim - kernel_ndim - 2
    r = a.shape[-1]
    lead_shape, in_shape, out_shape = a.shape[:lead], a.shape[lead:-1], b.shape[lead + 1:]
    n = int(np.prod(lead_shape))
    a2 = np.asarray(a, np.float32).reshape(n, int(np.prod(in_shape)), r)
    b2 = np.asarray(b, np.float32).reshape(n, r, int(np.prod(out_shape)))
    return (scale * np.matmul(a2, b2)).reshape(*lead_shape, *in_shape, *out_shape)


def merge_flat(flat: Mapping[str, Any], scale: float) -> dict[str, np.ndarray]:
    """Flat parameters with adapters -> the base parameters with W + scale * A B folded in (adapters dropped),
    each merged kernel in its own dtype."""
    pairs = adapter_kernels(flat)
    out = {}
    for k, v in flat.items():
        if is_adapter(k):
            continue
        if k in pairs:
            a, b = (np.asarray(flat[p]) for p in pairs[k])
            w = np.asarray(v)
            v = (w.astype(np.float32) + lora_delta(a, b, w.ndim, scale)).astype(w.dtype)
        out[k] = v
    return out
