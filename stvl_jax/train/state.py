"""Train state, described abstractly first, then initialised sharded.

Parameters live in two flat dicts keyed by the model's `/`-joined parameter paths: `params` (trainable groups;
differentiated, with optimizer state) and `frozen` (never differentiated, no optimizer state). The model is
rebuilt from both inside the jitted step (`ModelSpec.merge`), so JAX only sees `params` as differentiable.

    spec = ModelSpec.create(config, trainable_groups=("merger", "llm", "embed"), dtype=jnp.bfloat16)
    abstract = abstract_train_state(spec, tx)                # ShapeDtypeStructs, nothing allocated
    shardings = train_state_shardings(abstract, spec, mesh)  # NamedShardings from the rules table
    state = init_train_state(spec, tx, mesh, seed)           # jax.jit(init, out_shardings=shardings)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.nn.lora import LoRASpec, add_lora
from stvl_jax.nn.params import flat_key, flat_params
from stvl_jax.sharding import auto_mesh, logical_axes_of, named_sharding
from stvl_jax.train.param_groups import split_by_groups


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    step: jax.Array  # () int32: optimizer updates done
    params: dict[str, jax.Array]  # trainable, master dtype
    frozen: dict[str, jax.Array]  # never differentiated
    opt_state: Any  # optax state over `params` only
    rng: jax.Array  # (2,) uint32 raw key of the run, checkpointed (stochastic losses/layers: fold_in(rng, step))

    def all_params(self) -> dict[str, jax.Array]:
        return {**self.params, **self.frozen}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model's static structure: graph, abstract parameters (shapes, dtypes, logical axes), group split."""

    config: QwenVLConfig
    graphdef: Any
    abstract: dict[str, nnx.Variable]  # path -> abstract Param
    trainable_groups: tuple[str, ...]
    dtype: Any
    param_dtype: Any
    remat: str
    scan_layers: bool
    preprocessing: PreprocessConfig | None = None  # the model's (None: the family default); mean/std of uint8
    lora: LoRASpec | None = None  # LoRA adapters on the model's linear layers (`stvl_jax.nn.lora`)

    @classmethod
    def create(cls, config: QwenVLConfig, *, trainable_groups, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none", scan_layers: bool = True, preprocessing: PreprocessConfig | None = None,
               lora: LoRASpec | None = None) -> "ModelSpec":
        options = dict(dtype=dtype, param_dtype=param_dtype, remat=remat, scan_layers=scan_layers)
        model = nnx.eval_shape(lambda: _build(config, options, jax.random.PRNGKey(0), preprocessing, lora))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        if jax.tree.leaves(rest):  # the model holds only Params; anything else would be silently dropped
            raise AssertionError(f"model has non-Param state: {rest}")
        abstract = {flat_key(p): v for p, v in nnx.to_flat_state(params)}
        return cls(config, graphdef, abstract, tuple(trainable_groups), dtype, param_dtype, remat, scan_layers,
                   model.preprocessing, lora)

    def build_options(self) -> dict:
        """The runtime options this spec builds its model with (for a variant of the same model)."""
        return dict(dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat, scan_layers=self.scan_layers)

    def shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
        return {k: jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype) for k, v in self.abstract.items()}

    def split(self, flat: Mapping[str, Any]) -> tuple[dict, dict]:
        """{path: x} -> (trainable, frozen)."""
        return split_by_groups(flat, self.trainable_groups)

    def param_shardings(self, mesh: Mesh) -> dict[str, NamedSharding]:
        return {k: named_sharding(mesh, logical_axes_of(v), v.get_value().shape) for k, v in self.abstract.items()}

    def merge(self, flat: Mapping[str, jax.Array]) -> QwenVLForConditionalGeneration:
        """The model with the given parameter values (traceable)."""
        state = nnx.from_flat_state([(tuple(k.split("/")), v.replace(flat[k])) for k, v in self.abstract.items()])
        return nnx.merge(self.graphdef, state)


def _build(config, options: dict, key, preprocessing=None, lora=None) -> QwenVLForConditionalGeneration:
    rngs = nnx.Rngs(params=key)
    model = QwenVLForConditionalGeneration(config, **options, preprocessing=preprocessing, rngs=rngs)
    if lora is not None:
        add_lora(model, lora, rngs)  # adapters draw from the same stream after the base weights
    return model


def init_params_fn(spec: ModelSpec):
    """key -> flat {path: array}: the model's own initialisers (for `jax.jit(..., out_shardings=...)`)."""

    def init(key):
        model = _build(spec.config, spec.build_options(), key, spec.preprocessing, spec.lora)
        return {k: v.get_value() for k, v in flat_params(model).items()}

    return init


def opt_state_shardings(abstract_opt_state, spec: ModelSpec, mesh: Mesh):
    """Optimizer leaves keyed by a parameter path and shaped like it (Adam moments) take its sharding; the
    rest (counts, scalars) are replicated."""
    replicated = named_sharding(mesh, ())
    shardings, shapes = spec.param_shardings(mesh), spec.shapes()

    def one(path, leaf):
        key = getattr(path[-1], "key", None) if path else None
        if isinstance(key, str) and key in shapes and tuple(leaf.shape) == shapes[key].shape:
            return shardings[key]
        return replicated

    return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def abstract_train_state(spec: ModelSpec, tx: optax.GradientTransformation) -> TrainState:
    shapes = spec.shapes()
    params, frozen = spec.split(shapes)
    return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, frozen=frozen,
                      opt_state=jax.eval_shape(tx.init, params), rng=jax.ShapeDtypeStruct((2,), jnp.uint32))


def train_state_shardings(abstract: TrainState, spec: ModelSpec, mesh: Mesh) -> TrainState:
    ps = spec.param_shardings(mesh)
    params, frozen = spec.split(ps)
    replicated = named_sharding(mesh, ())
    return TrainState(step=replicated, params=params, frozen=frozen,
                      opt_state=opt_state_shardings(abstract.opt_state, spec, mesh), rng=replicated)


def init_train_state(spec: ModelSpec, tx: optax.GradientTransformation, mesh: Mesh, seed: int,
                     params: Mapping[str, jax.Array] | None = None) -> TrainState:
    """Sharded initial state: fresh parameters from `seed` (or the given, already placed `params`), zero
    optimizer state. Nothing is materialised unsharded."""
    mesh = auto_mesh(mesh)
    abstract = abstract_train_state(spec, tx)
    shardings = train_state_shardings(abstract, spec, mesh)
    # keys are made inside jit from the int seed: no host array enters a multi-process jit
    if params is None:
        init = init_params_fn(spec)
        all_shardings = {**shardings.params, **shardings.frozen}
        with jax.set_mesh(mesh):
            params = jax.jit(lambda: init(jax.random.split(jax.random.PRNGKey(seed))[0]),
                             out_shardings=all_shardings)()
    trainable, frozen = spec.split(params)

    def init_rest(trainable):
        return tx.init(trainable), jnp.zeros((), jnp.int32), jax.random.split(jax.random.PRNGKey(seed))[1]

    with jax.set_mesh(mesh):
        opt_state, step, rng = jax.jit(init_rest, out_shardings=(shardings.opt_state, shardings.step,
                                                                 shardings.rng))(trainable)
    return TrainState(step=step, params=trainable, frozen=frozen, opt_state=opt_state, rng=rng)
