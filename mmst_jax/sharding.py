"""Device meshes, logical axis rules, and placing, creating and gathering sharded trees.

Model code names every parameter and activation with logical axes (`batch`, `length`, `embed`,
`heads`, `kv`, `mlp`, `vocab`, `layers`); rules map them to the mesh axes `data`, `fsdp` and
`tensor`. A rule list is t5x's: ordered (logical, mesh) pairs, the first rule of a logical axis wins,
a mesh axis is used at most once per array, and None (or no rule) means replicated.

    MeshConfig(shape={'data': -1, 'fsdp': 1, 'tensor': 1})     # -1: inferred from the device count
      .make_mesh()                                            # -> jax.sharding.Mesh
    logical_to_sharding(logical_specs(boxed), mesh, rules)    # params, optimizer state, any boxed tree
    init_sharded(init_fn, abstract, shardings)(rng)           # created in place, never whole on a device
    host_batch_to_global(batch, mesh, rules)                  # process-local rows -> global arrays
    gather_to_host(tree)                                      # any sharded tree -> numpy on every host
    with activation_sharding(mesh, rules): ...                # activates nn.with_logical_constraint
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv", "mlp", "vocab", "layers")

# Data parallelism over the batch (data x fsdp), FSDP (ZeRO-3) over the embedding dimension of the
# parameters and optimizer state, Megatron tensor parallelism over heads, MLP and vocabulary.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
)


# Rule sets by name: a topology's gin file selects one (`partitioning.MeshConfig.rules = 'fsdp_tensor'`).
RULE_SETS: dict[str, tuple[tuple[str, Any], ...]] = {"fsdp_tensor": DEFAULT_RULES}


class PartitioningError(ValueError):
    """A mesh, rule or sharding that cannot work; the message says what to change."""


def _mesh_axes_of(target) -> tuple[str, ...]:
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def mesh_axes_of_logical(logical: str, rules: Sequence[tuple[str, Any]]) -> tuple[str, ...]:
    """The mesh axes a logical axis is split over under `rules` (the first rule of it wins)."""
    for name, target in validate_rules(rules):
        if name == logical:
            return _mesh_axes_of(target)
    return ()


def validate_rules(rules: Sequence[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Checks every rule names a known logical axis and known mesh axes; returns them as tuples."""
    checked = []
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise PartitioningError(f"logical axis rule {rule!r} must be a pair (logical_axis, mesh_axes)")
        logical, target = rule
        if logical not in LOGICAL_AXES:
            raise PartitioningError(f"rule {tuple(rule)!r} names logical axis {logical!r}; the model's "
                                    f"logical axes are {', '.join(LOGICAL_AXES)}")
        for axis in _mesh_axes_of(target):
            if axis not in MESH_AXES:
                raise PartitioningError(f"rule {tuple(rule)!r} names mesh axis {axis!r}; the mesh axes "
                                        f"are {', '.join(MESH_AXES)}")
        checked.append((logical, tuple(target) if isinstance(target, list) else target))
    return tuple(checked)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """A device mesh and its logical axis rules (one topology file of gin_configs/topologies)."""

    shape: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1})
    rules: str | Sequence[tuple[str, Any]] = DEFAULT_RULES  # a name of RULE_SETS, or the rules themselves
    name: str = "default"
    num_devices: int | None = None  # the slice's device count (for `mmst plan`); None: what is there
    hbm_gib: float | None = None  # memory per device, for `mmst plan`
    tpu_topology: str | None = None  # e.g. 'v4:8x8x4', for ahead-of-time TPU compilation in `mmst plan`

    def __post_init__(self):
        unknown = set(self.shape) - set(MESH_AXES)
        if unknown:
            raise PartitioningError(f"mesh shape {dict(self.shape)} has unknown axes {sorted(unknown)}; "
                                    f"use {', '.join(MESH_AXES)}")
        if sum(1 for v in self.shape.values() if v == -1) > 1:
            raise PartitioningError(f"mesh shape {dict(self.shape)}: at most one axis may be -1 (inferred)")
        if any(v == 0 or v < -1 for v in self.shape.values()):
            raise PartitioningError(f"mesh shape {dict(self.shape)}: sizes must be positive or -1")
        rules = self.rules
        if isinstance(rules, str):
            if rules not in RULE_SETS:
                raise PartitioningError(f"unknown rule set {rules!r}; rule sets: {', '.join(sorted(RULE_SETS))}")
            rules = RULE_SETS[rules]
        object.__setattr__(self, "rules", validate_rules(rules))

    def resolve(self, num_devices: int) -> tuple[int, ...]:
        """The (data, fsdp, tensor) sizes for `num_devices` devices."""
        sizes = [int(self.shape.get(axis, 1)) for axis in MESH_AXES]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise PartitioningError(
                    f"mesh {self.name} {dict(self.shape)}: the fixed axes use {known} devices, which does "
                    f"not divide the {num_devices} devices; choose sizes that divide {num_devices}")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise PartitioningError(
                f"mesh {self.name} {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
                f"{num_devices} are present; make the product of the sizes {num_devices} (or set one axis "
                "to -1 to infer it)")
        return tuple(sizes)

    def make_mesh(self, devices: Sequence[jax.Device] | None = None) -> Mesh:
        devices = list(jax.devices() if devices is None else devices)
        return make_mesh(self.resolve(len(devices)), devices)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh of the given sizes. Uses jax's device order for the physical
    topology (mesh_utils), so on TPU the `tensor` axis lands on the fastest interconnect."""
    devices = list(jax.devices() if devices is None else devices)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise PartitioningError(f"mesh shape {shape} must give one size per axis {MESH_AXES}")
    if math.prod(shape) != len(devices):
        raise PartitioningError(f"mesh shape {shape} has {math.prod(shape)} devices but {len(devices)} are "
                                f"available: choose sizes whose product is {len(devices)}")
    try:
        from jax.experimental import mesh_utils

        array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        array = np.asarray(devices).reshape(shape)
    return Mesh(array, MESH_AXES)


# --------------------------------------------------------------------------------------------
# Logical specs -> shardings
# --------------------------------------------------------------------------------------------
def logical_specs(boxed_tree: Any) -> Any:
    """The logical PartitionSpec of every leaf of a tree carrying nn.Partitioned metadata (params,
    or an optimizer state built from boxed params); unboxed leaves get PartitionSpec()."""
    return nn.get_partition_spec(boxed_tree)


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def mesh_spec(logical: PartitionSpec, rules) -> PartitionSpec:
    return nn.logical_to_mesh_axes(logical, rules)


def logical_to_sharding(specs: Any, mesh: Mesh, rules=DEFAULT_RULES, shapes: Any = None) -> Any:
    """NamedShardings for a tree of logical PartitionSpecs. With `shapes` (a matching tree of arrays
    or ShapeDtypeStructs) every sharded dimension is checked to divide evenly."""
    rules = validate_rules(rules)
    out = jax.tree.map(lambda s: NamedSharding(mesh, mesh_spec(s, rules)), specs, is_leaf=_is_spec)
    if shapes is not None:
        paths = jax.tree_util.tree_flatten_with_path(specs, is_leaf=_is_spec)[0]
        for (path, logical), sharding, shaped in zip(paths, jax.tree.leaves(out), jax.tree.leaves(shapes)):
            check_divisible(jax.tree_util.keystr(path), shaped.shape, logical, sharding)
    return out


def check_divisible(name: str, shape: Sequence[int], logical: PartitionSpec, sharding: NamedSharding):
    """Raises PartitioningError if a dimension does not divide by the mesh axes it is sharded over."""
    for dim, (size, axes) in enumerate(zip(shape, tuple(sharding.spec) + (None,) * len(shape))):
        axes = _mesh_axes_of(axes)
        ways = math.prod(sharding.mesh.shape[a] for a in axes)
        if ways > 1 and size % ways:
            label = logical[dim] if dim < len(logical) else None
            raise PartitioningError(
                f"{name}: dimension {dim} ({label}) has size {size}, not divisible by mesh axes "
                f"{'x'.join(axes)} = {ways}; change the mesh shape or the rule for {label!r}")


def abstract_with_shardings(abstract: Any, sharding_tree: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, sharding_tree)


def init_sharded(init_fn: Callable, out_shardings: Any) -> Callable:
    """jit(init_fn) whose outputs are created directly in their shards (never whole on a device)."""
    return jax.jit(init_fn, out_shardings=out_shardings)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=DEFAULT_RULES):
    """Inside, `nn.with_logical_constraint` on activations becomes a sharding constraint.

    Use it inside the function being jitted (it sets the abstract mesh, which jit allows; a
    concrete `jax.set_mesh` is only allowed outside jit)."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(validate_rules(rules)):
        yield


# --------------------------------------------------------------------------------------------
# Host <-> devices
# --------------------------------------------------------------------------------------------
def place(tree: Any, sharding_tree: Any) -> Any:
    """Puts a tree on devices with the given shardings. Host values (identical on every host): each
    host puts only its own devices' slices. Arrays already spread over several hosts' devices are
    resharded on the devices (on every host at once), never gathered to one host."""
    def one(x, s):
        if isinstance(x, jax.Array) and (x.sharding == s or not x.is_fully_addressable):
            return jax.device_put(x, s)
        return jax.make_array_from_callback(np.shape(x), s, lambda index: np.asarray(x)[index])

    return jax.tree.map(one, tree, sharding_tree)


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, length, ...] input: batch split by the `batch` rule."""
    logical = PartitionSpec("batch", "length", *([None] * (ndim - 2)))[:ndim]
    return NamedSharding(mesh, mesh_spec(logical, validate_rules(rules)))


def host_batch_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh, rules=DEFAULT_RULES) -> dict:
    """This process's rows of a batch -> global arrays (rows of all processes, in process order)."""
    out = {}
    for name, local in batch.items():
        local = np.asarray(local)
        sharding = batch_sharding(mesh, rules, local.ndim)
        ways = math.prod(mesh.shape[a] for a in _mesh_axes_of(sharding.spec[0]))
        global_rows = local.shape[0] * jax.process_count()
        if global_rows % ways:
            raise PartitioningError(f"batch feature {name!r}: {global_rows} rows do not divide over "
                                    f"{ways} batch shards; use a global batch size divisible by {ways}")
        out[name] = jax.make_array_from_process_local_data(sharding, local, (global_rows,) + local.shape[1:])
    return out


def spans_processes(mesh: Mesh) -> bool:
    """Whether a mesh holds devices of other processes (hosts) than this one."""
    return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def gather_to_host(tree: Any) -> Any:
    """Fetches a sharded tree to numpy on every host (all-gathering across processes if needed)."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)


def shard_from_host_slices(shape: Sequence[int], dtype, sharding: NamedSharding, fill) -> jax.Array:
    """Builds a global array from host slices without ever holding the whole array on one host.

    `fill(slices)` receives a list of (index, numpy buffer) pairs, one per distinct slice that this
    host's devices need (index: a tuple of slices into the global array), and writes each buffer in
    place. It is called once, so a caller can stream its source (layer by layer, say) and write
    every slice from a single read.
    """
    shape = tuple(shape)
    groups: dict[tuple, tuple[tuple[slice, ...], list[jax.Device]]] = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        key = tuple(s.indices(n) for s, n in zip(index, shape))
        groups.setdefault(key, (index, []))[1].append(device)
    slices = []
    for key, (index, _) in groups.items():
        slices.append((index, np.empty(tuple(len(range(*k)) for k in key), dtype)))
    fill(slices)
    arrays = [jax.device_put(buf, d) for (_, buf), (_, devices) in zip(slices, groups.values())
              for d in devices]
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)
