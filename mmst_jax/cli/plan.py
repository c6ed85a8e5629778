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
`target='auto'` takes tpu when it can. Either way the command must start before anything else in the
process touches JAX.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Sequence

import gin

from mmst_jax import memory_plan
from mmst_jax.cli.configurables import MeshConfig


def _tpu_devices(topology: str) -> list:
    """The devices of a TPU slice described by `topology` (ahead-of-time: no TPU needed)."""
    from jax.experimental import topologies

    kwargs = {"chip_config_name": "megacore"} if topology.startswith(("v4", "v5p")) else {}
    return topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs).devices


def _have_libtpu() -> bool:
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None


def _simulate_devices(count: int) -> None:
    """Asks XLA for `count` host devices; must run before JAX's backends start."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
    os.environ["JAX_PLATFORMS"] = "cpu"

    import jax

    jax.config.update("jax_platforms", "cpu")
    if jax.device_count() != count:
        raise RuntimeError(f"JAX started with {jax.device_count()} devices before `mmst plan` could ask "
                           f"for {count}: run `mmst plan` in a fresh process")


def compile_train(config, mesh, rules, workload: memory_plan.Workload):
    import functools

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from mmst_jax import training

    tc = training.TrainConfig(batch_size=workload.train_batch, num_steps=10, progress_bar=False)
    optimizer = training.make_optimizer(tc)
    shardings = training.state_shardings(config, optimizer, mesh, rules)
    state = training.abstract_state(config, optimizer, shardings)
    data = training.batch_sharding(mesh, rules)
    shape = (workload.train_batch, workload.train_length)
    batch = {name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=data) for name in training.FEATURES}
    step = jax.jit(functools.partial(training.train_step, config=config, optimizer=optimizer, tc=tc,
                                     batch_sharding=data),
                   in_shardings=(shardings, data), out_shardings=(shardings, None), donate_argnums=0)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return step.lower(state, batch).compile()


def compile_decode(config, mesh, rules, workload: memory_plan.Workload):
    """One sampling step: a token per row against a KV cache of `cache_length` slots."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from mmst_jax import sharding
    from mmst_jax.models.bloom import BloomForCausalLM, cache_logical_axes, init_cache

    model = BloomForCausalLM(config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 1), jnp.int32)))["params"]
    abstract_params = nn.unbox(boxed)
    param_shardings = sharding.logical_to_sharding(
        sharding.logical_specs(boxed), mesh, rules, shapes=abstract_params)
    cache = jax.eval_shape(lambda: init_cache(config, workload.decode_batch, workload.cache_length))
    cache_shardings = sharding.logical_to_sharding(cache_logical_axes(cache), mesh, rules, shapes=cache)
    rows = sharding.batch_sharding(mesh, rules)
    token = jax.ShapeDtypeStruct((workload.decode_batch, 1), jnp.int32, sharding=rows)
    mask = jax.ShapeDtypeStruct((workload.decode_batch, workload.cache_length), jnp.int32, sharding=rows)

    def step(params, cache, token, mask):
        logits, variables = model.apply({"params": params, "cache": cache}, token, mask, decode=True,
                                        mutable=["cache"])
        return jnp.argmax(logits[:, -1], axis=-1), variables["cache"]

    jitted = jax.jit(step, in_shardings=(param_shardings, cache_shardings, rows, rows),
                     out_shardings=(None, cache_shardings), donate_argnums=1)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return jitted.lower(sharding.abstract_with_shardings(abstract_params, param_shardings),
                            sharding.abstract_with_shardings(cache, cache_shardings), token, mask).compile()


@gin.configurable(denylist=["output"])
def plan(output: str | None = None, *, model_preset: str = "bloom-176b", dtype: str = "bfloat16",
         param_dtype: str = "bfloat16", remat_policy: str = "full", train_batch: int = 256,
         train_length: int = 1024, decode_batch: int = 256, cache_length: int = 2048,
         compile: bool = True, target: str = "auto", mesh_config: MeshConfig | None = None) -> list[dict]:
    """Plans one topology (the gin-bound `partitioning.MeshConfig`); returns the table rows."""
    mesh_config = mesh_config or MeshConfig()
    devices = mesh_config.num_devices
    if devices is None:
        raise ValueError("the topology does not say how many devices its slice has: set "
                         "partitioning.MeshConfig.num_devices (the files in gin_configs/topologies do)")
    mesh_shape = mesh_config.resolve(devices)
    from mmst_jax.models.bloom import BloomConfig

    config = BloomConfig.preset(model_preset, dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy)
    workload = memory_plan.Workload(train_batch, train_length, decode_batch, cache_length,
                                    optimizer_dtype=param_dtype)
    rows = []
    compiled = {}
    if target not in ("auto", "tpu", "cpu"):
        raise ValueError(f"plan target {target!r}: choose auto, tpu or cpu")
    if target == "auto":
        target = "tpu" if mesh_config.tpu_topology and _have_libtpu() else "cpu"
    if target == "tpu" and not (mesh_config.tpu_topology and _have_libtpu()):
        raise ValueError("target='tpu' needs libtpu (pip install 'jax[tpu]') and a topology with "
                         "partitioning.MeshConfig.tpu_topology")
    if compile:
        if target == "tpu":
            device_list = _tpu_devices(mesh_config.tpu_topology)
        else:
            _simulate_devices(devices)
            import jax

            device_list = jax.devices()
        mesh = mesh_config.make_mesh(device_list)
        for step, fn in (("train", compile_train), ("decode", compile_decode)):
            start = time.perf_counter()
            try:
                measured = memory_plan.compiled_memory(fn(config, mesh, mesh_config.rules, workload))
            except Exception as e:  # the TPU compiler refuses programs that exceed HBM: a verdict
                measured = memory_plan.out_of_memory(e)
                if measured is None:
                    raise
            compiled[step] = (measured, time.perf_counter() - start)
    for step, analytic in (("train", memory_plan.analytic_train(config, mesh_shape, workload)),
                           ("decode", memory_plan.analytic_decode(config, mesh_shape, workload))):
        measured, seconds = compiled.get(step, (None, None))
        total = measured["peak"] if measured else analytic["total"]
        verdict = False if measured and measured.get("out_of_memory") else memory_plan.fits(
            total, mesh_config.hbm_gib)
        rows.append({
            "slice": mesh_config.name, "devices": devices, "mesh": list(mesh_shape), "step": step,
            "target": target if compile else "analytic", "model": model_preset, "dtype": dtype, "param_dtype": param_dtype, "remat": remat_policy,
            "workload": dataclasses.asdict(workload), "hbm_gib": mesh_config.hbm_gib,
            "compiled": measured, "compiled_peak": measured["peak"] if measured else None,
            "compile_seconds": seconds, "analytic": analytic, "analytic_total": analytic["total"],
            "fits": verdict,
        })
    if output:
        tmp = f"{output}.tmp"
        with open(tmp, "w") as f:
            f.write(memory_plan.to_json(rows))
        os.replace(tmp, output)
    return rows


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst plan", description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--no_compile", action="store_true", help="analytic estimate only")
    args = parser.parse_args(argv)
    rows = plan(args.output, compile=not args.no_compile)
    print(memory_plan.format_table(rows))
    return 0
