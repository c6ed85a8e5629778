"""`mmst plan`: will a model fit a slice? Compile the fine-tuning step and the decode step against
abstract inputs for the slice's devices (no weights are allocated) and report per-device memory from
the compiled executables next to the analytic estimate.

    mmst plan --gin_file=topologies/v4-512.gin --gin.plan.model_preset="'bloom-176b'" --output plan.json

Two compilation targets:
  tpu  ahead-of-time compilation by the real TPU compiler for the topology's chip layout
       (`partitioning.MeshConfig.tpu_topology`, e.g. 'v4:8x8x4'); needs libtpu installed
       (`pip install "jax[tpu]"`, or libtpu alone on a CPU host) but no TPU.
  cpu  the same programs on simulated host devices (`--xla_force_host_platform_device_count`).
       The CPU compiler emulates bf16 matmuls in fp32 and lays buffers out differently, so its
       figures overstate TPU memory; they check the sharding, not the fit.
`plan.target='auto'` takes tpu when it can. Either way the command must start before anything else
in the process touches JAX. Settings are gin bindings of `plan.*` (memory_plan.plan's arguments).
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from mmst_jax import memory_plan
from mmst_jax.cli import configurables
from mmst_jax.records import write_text


def _tpu_devices(topology: str) -> list:
    """The devices of a TPU slice described by `topology` (ahead-of-time: no TPU needed)."""
    from jax.experimental import topologies

    kwargs = {"chip_config_name": "megacore"} if topology.startswith(("v4", "v5p")) else {}
    return topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs).devices


def _simulated_devices(count: int) -> list:
    """`count` host devices from XLA; must run before JAX's backends start."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
    os.environ["JAX_PLATFORMS"] = "cpu"

    import jax

    jax.config.update("jax_platforms", "cpu")
    if jax.device_count() != count:
        raise RuntimeError(f"JAX started with {jax.device_count()} devices before `mmst plan` could ask "
                           f"for {count}: run `mmst plan` in a fresh process")
    return jax.devices()


def _devices(target: str, mesh_config) -> list:
    if target == "tpu":
        return _tpu_devices(mesh_config.tpu_topology)
    return _simulated_devices(mesh_config.num_devices)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst plan", description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--no_compile", action="store_true", help="analytic estimate only")
    args = parser.parse_args(argv)
    rows = configurables.plan(mesh_config=configurables.mesh_config(), devices=_devices,
                              compile=not args.no_compile)
    if args.output:
        write_text(args.output, memory_plan.to_json(rows))
    print(memory_plan.format_table(rows))
    return 0
