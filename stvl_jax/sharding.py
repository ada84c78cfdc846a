"""THE logical-axis rules table and mesh helpers — the one place where sharding is decided.

Every parameter carries `logical_axes` metadata (e.g. `('embed', 'mlp')`) and every activation that matters is
constrained by logical name (`act_batch`, `act_len`, ...). This module maps logical names to the mesh axes
`('data', 'fsdp', 'tensor')` through `LOGICAL_AXIS_RULES`. Nothing else in the code base names a mesh axis.

Rules:
- a logical axis maps to a tuple of mesh axes (sharded over their product) or to nothing (replicated);
- mapping two logical axes of one array to the same mesh axis is an error (`ShardingError`);
- a dimension that the mesh-axis product does not divide (odd head counts, tiny test models) is replicated
  instead, and `describe_shardings` reports it, so small configs still run on big meshes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# logical axis -> mesh axes. Order of the table is documentation only; lookups are by name.
LOGICAL_AXIS_RULES: dict[str, tuple[str, ...]] = {
    # ---- parameters --------------------------------------------------------------------------
    "layers": (),  # stacked (scanned) layer dimension
    "vocab": ("tensor",),
    "embed": ("fsdp",),  # model width of the text decoder
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "norm": (),  # 1-D scale/bias vectors: tiny, replicate
    "vis_embed": ("fsdp",),  # vision tower width
    "vis_mlp": ("tensor",),
    "vis_heads": ("tensor",),
    "vis_merge": ("fsdp",),  # merger input: 2x2 patches concatenated (4 * vis_embed)
    "conv_in": (),  # Conv3d patch-embed input (C * T * P * P)
    "pos_table": (),  # learned vision position table rows
    "lora_rank": (),  # LoRA adapter rank (stvl_jax.nn.lora): small, replicated; A/B shard like their kernel
    # ---- SAM2 memory (memory encoder, memory attention, memory bank); widths reuse vis_embed / vis_mlp ----
    "sam2_window": (),  # conv kernel height / width
    "sam2_chans": (),  # small conv channel dims (mask downsampler 1..256; outputs of width->width 1x1 convs)
    "sam2_mem": (),  # memory channels (mem_dim: 64 in SAM2): small, replicated
    "sam2_maskmem": (),  # rows of the temporal memory embedding (num_maskmem)
    # ---- VIRST fusion modules (SegPrompter, initial fusion): 256 wide, small, replicated ----
    "virst_embed": (),  # prompter width (SAM2's prompt width) and fusion conv channels
    "virst_heads": (),
    "virst_mlp": (),
    # ---- activations -------------------------------------------------------------------------
    "act_batch": ("data", "fsdp"),
    "act_len": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    "vis_patch": ("data", "fsdp"),  # packed vision patches (all images/videos of the batch)
    "frames": (),
    "cache_len": (),
}


class ShardingError(ValueError):
    """Inconsistent logical axes (unknown name, or two logical axes of one array on one mesh axis)."""


def make_mesh(shape: Mapping[str, int] | Sequence[int] | None = None, devices=None) -> Mesh:
    """Build a `('data','fsdp','tensor')` mesh with Auto axis types (compiler-propagated, pjit style).

    `shape` is a dict or a 3-tuple; one entry may be -1 (fills the remaining devices). Default: all devices on
    `fsdp`. Example: `make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})` on 8 devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if shape is None:
        sizes = [1, -1, 1]
    elif isinstance(shape, Mapping):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ShardingError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
        sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    else:
        sizes = [int(s) for s in shape]
        if len(sizes) != len(MESH_AXES):
            raise ShardingError(f"mesh shape {tuple(sizes)} must have {len(MESH_AXES)} entries {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ShardingError(f"mesh shape {sizes}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if n % known:
            raise ShardingError(f"mesh shape {sizes} does not divide the {n} available devices")
        sizes[sizes.index(-1)] = n // known
    if int(np.prod(sizes)) != n:
        raise ShardingError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices but {n} are available"
        )
    dev = np.asarray(devices).reshape(sizes)
    return Mesh(dev, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def auto_mesh(mesh: Mesh | None) -> Mesh | None:
    """`mesh` with Auto axis types (the same devices and axis names; the mesh itself when it already is Auto).

    Every entry point that takes a mesh goes through this, so a mesh built the plain JAX way
    (`jax.make_mesh(...)`, Explicit axes by default) works: the model constrains activations by logical name
    and leaves the rest to the partitioner, which is Auto-axis semantics (docs/design.md, "Meshes").
    """
    if mesh is None or all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _mesh_axis_size(mesh, axes: tuple[str, ...]) -> int:
    return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def logical_to_spec(
    logical_axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh=None,
    rules: Mapping[str, tuple[str, ...]] | None = None,
) -> PartitionSpec:
    """Map logical axis names to a PartitionSpec.

    With `shape` and `mesh`, mesh axes that do not divide the dimension are dropped (replicated).
    `None` as a logical name means "replicate this dimension".
    """
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    if shape is not None and len(shape) != len(logical_axes):
        raise ShardingError(f"logical axes {tuple(logical_axes)} do not match array rank {len(shape)}")
    used: dict[str, str] = {}
    spec = []
    for i, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise ShardingError(f"logical axis {name!r} has no rule in stvl_jax.sharding.LOGICAL_AXIS_RULES")
        axes = tuple(a for a in rules[name] if mesh is None or a in mesh.shape)
        for a in axes:
            if a in used:
                raise ShardingError(
                    f"logical axes {used[a]!r} and {name!r} of {tuple(logical_axes)} both map to mesh axis {a!r}"
                )
            used[a] = name
        if mesh is not None and shape is not None:
            # drop trailing mesh axes until the product divides the dimension
            while axes and shape[i] % _mesh_axis_size(mesh, axes):
                axes = axes[:-1]
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None):
    """NamedSharding on `auto_mesh(mesh)` from logical axes (`()`: replicated); dims the mesh does not divide are
    replicated."""
    return NamedSharding(auto_mesh(mesh), logical_to_spec(logical_axes, shape, mesh))


def host_to_mesh(x, mesh: Mesh, logical_axes: Sequence[str | None], global_shape: Sequence[int] | None = None
                 ) -> jax.Array:
    """THE way a host (numpy) batch array goes onto the mesh: a global `jax.Array` laid out by logical axes.

    One process: `x` is the whole array. Several processes: each passes its own rows of the sharded dimension and
    `global_shape` the global shape (`jax.make_array_from_process_local_data`)."""
    x = np.asarray(x)
    shape = tuple(x.shape if global_shape is None else global_shape)
    return jax.make_array_from_process_local_data(named_sharding(mesh, logical_axes, shape), x, shape)


def _is_variable(x) -> bool:
    from flax import nnx

    return isinstance(x, nnx.Variable)


def logical_axes_of(variable) -> tuple[str | None, ...]:
    """The logical axes of an nnx Variable (replicated when it has none)."""
    axes = variable.get_metadata().get("logical_axes") if hasattr(variable, "get_metadata") else None
    if axes is None:
        return (None,) * np.ndim(variable.get_value())
    return tuple(axes)


def state_shardings(state, mesh: Mesh):
    """NamedSharding for every Variable of an nnx State (abstract or concrete), from its `logical_axes`."""

    def one(v):
        value = v.get_value()
        return named_sharding(mesh, logical_axes_of(v), tuple(value.shape))

    return jax.tree.map(one, state, is_leaf=_is_variable)


@dataclasses.dataclass(frozen=True)
class ShardingReport:
    total_params: int
    replicated_params: int  # params in arrays with no sharded dimension
    # "path (shape): logical axis dim N not divisible by mesh axes (M) -> kept / replicated", one per dimension
    fallbacks: tuple[str, ...]
    mesh_shape: dict = dataclasses.field(default_factory=dict)

    @property
    def replicated_fraction(self) -> float:
        return self.replicated_params / max(self.total_params, 1)

    def summary(self, max_lines: int = 12) -> str:
        """The block the trainer prints at start ('' when the rules table applied everywhere as written)."""
        if not self.fallbacks:
            return ""
        lines = [f"sharding on mesh {self.mesh_shape}: {len(self.fallbacks)} parameter dimension(s) left unsharded "
                 f"because the mesh does not divide them ({100 * self.replicated_fraction:.1f}% of the parameters "
                 f"are fully replicated):"]
        lines += [f"  {f}" for f in self.fallbacks[:max_lines]]
        if len(self.fallbacks) > max_lines:
            lines.append(f"  ... and {len(self.fallbacks) - max_lines} more")
        return "\n".join(lines)


def describe_shardings(state, mesh: Mesh) -> ShardingReport:
    """How the rules table lays out `state` (an nnx State, or a flat {path: Variable} dict, abstract or concrete)
    on `mesh`: every dimension the mesh does not divide (replicated instead; MaxText-style tolerance check)."""
    from flax import nnx

    items = state.items() if isinstance(state, dict) else nnx.to_flat_state(state)
    total = replicated = 0
    fallbacks = []
    for path, v in items:
        shape = tuple(v.get_value().shape)
        size = int(np.prod(shape))
        total += size
        axes = logical_axes_of(v)
        spec = logical_to_spec(axes, shape, mesh)
        full = logical_to_spec(axes, None, mesh)
        if all(s is None for s in spec):
            replicated += size
        name_of = path if isinstance(path, str) else "/".join(map(str, path))
        for dim, (name, got, want) in enumerate(zip(axes, spec, full)):
            if got != want:
                want_axes = (want,) if isinstance(want, str) else tuple(want)
                fallbacks.append(f"{name_of} {shape}: {name} dim {shape[dim]} not divisible by "
                                 f"{' x '.join(want_axes)} ({_mesh_axis_size(mesh, want_axes)}) -> "
                                 f"{'replicated' if got is None else f'sharded over {got} only'}")
    return ShardingReport(total, replicated, tuple(fallbacks), dict(mesh.shape))


def current_mesh():
    """The mesh set by `jax.set_mesh`, or None."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh is None or mesh.empty else mesh


def constrain(x: jax.Array, logical_axes: Iterable[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names under the active mesh; a no-op without one."""
    mesh = current_mesh()
    if mesh is None:
        return x
    spec = logical_to_spec(tuple(logical_axes), x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def place_on_mesh(model, mesh: Mesh):
    """Move an nnx model's Variables onto `mesh` as the rules table says (in place); sets `model.mesh` (Auto)."""
    from flax import nnx

    mesh = auto_mesh(mesh)
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh)))
    model.mesh = mesh
    return model
