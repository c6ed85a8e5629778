"""Device meshes, logical axis rules, and placing/gathering sharded trees.

Model code names every parameter and activation with logical axes (`batch`, `length`, `embed`,
`heads`, `kv`, `mlp`, `vocab`, `layers`); the rules here map them to the mesh axes `data`, `fsdp`
and `tensor` (t5x convention: an ordered list of (logical, mesh) pairs, first match wins; a logical
axis mapped to None is replicated).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Megatron-style tensor parallelism over heads and MLP, FSDP over the embedding dimension of
# parameters, data parallelism over the batch.
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


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh of the given shape over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must give one size per axis {MESH_AXES}")
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh shape {shape} has {int(np.prod(shape))} devices but {len(devices)} are "
                         f"available: choose sizes whose product is {len(devices)}")
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Maps a tree of logical PartitionSpecs to NamedShardings on `mesh`."""
    def one(spec):
        return NamedSharding(mesh, nn.logical_to_mesh_axes(spec, rules))
    return jax.tree.map(one, logical_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_logical_specs(model: nn.Module, *init_args) -> Any:
    """The logical PartitionSpec of every parameter, from an abstract init (nothing allocated)."""
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *init_args))
    return nn.get_partition_spec(abstract)["params"]


def place(tree: Any, shardings: Any) -> Any:
    """Puts a host tree (numpy) on devices with the given shardings."""
    return jax.tree.map(jax.device_put, tree, shardings)


def gather_to_host(tree: Any) -> Any:
    """Fetches a (possibly sharded) tree to host numpy arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


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
