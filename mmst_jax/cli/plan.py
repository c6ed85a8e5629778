"""`mmst plan`: will a run fit its slice, and what does a round cost? Builds the run's programs from
its gin config exactly as `mmst run` does (mmst_jax.mmst.programs: the fine-tuning step and every
decode program of a round), checks them as `mmst run` does before its first sample, compiles each
against abstract inputs for the slice's devices (no weights are allocated), and reports per-device
memory from the compiled executables next to the analytic estimate, and the FLOPs and time of a round.

    mmst plan --gin_file=experiments/bloom-176b_v4-512.gin --output plan.json

Two compilation targets:
  tpu  ahead-of-time compilation by the real TPU compiler for the topology's chip layout
       (`partitioning.MeshConfig.tpu_topology`, e.g. 'v4:8x8x4'); needs libtpu installed
       (`pip install "jax[tpu]"`, or libtpu alone on a CPU host) but no TPU.
  cpu  the same programs on simulated host devices (`--xla_force_host_platform_device_count`).
       The CPU compiler emulates bf16 matmuls in fp32 and lays buffers out differently, so its
       figures overstate TPU memory; they check the sharding, not the fit.
`mmst.plan.target='auto'` takes tpu when it can. Either way the command must start before anything
else in the process touches JAX. The prompts' real lengths are measured when a tokenizer is at hand
(the HF checkpoint's, or tasks.tokenizer.path); otherwise caches are sized by the prompt budget and
a round's size is unknown.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import gin

from mmst_jax import memory_plan
from mmst_jax.cli import configurables
from mmst_jax.records import write_text


def _tpu_devices(topology: str) -> list:
    """The devices of a TPU slice described by `topology` (ahead-of-time: no TPU needed)."""
    from jax.experimental import topologies

    kwargs = {"chip_config_name": "megacore"} if topology.startswith(("v4", "v5p")) else {}
    return topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs).devices


def _devices(target: str, mesh_config) -> list:
    if target == "tpu":
        return _tpu_devices(mesh_config.tpu_topology)
    from mmst_jax.distributed import simulate_cpu_devices

    simulate_cpu_devices(mesh_config.num_devices)
    import jax

    return jax.devices()


def _bound_tokenizer() -> str | None:
    try:
        return gin.query_parameter("tasks.tokenizer.path")
    except ValueError:
        return None


def _prompts(base):
    """(the run's prompt records with their token counts, the tokenizer) when a tokenizer is at
    hand: the base model's, else tasks.tokenizer.path; (None, None) if neither exists."""
    from etils import epath

    from mmst_jax.mmst import problems, programs
    from mmst_jax.vocab import HFTokenizerVocabulary

    tokenizer, bound = programs.base_tokenizer(base), _bound_tokenizer()
    if tokenizer is None:
        if bound is None or not epath.Path(bound).exists():
            return None, None
        tokenizer = epath.Path(bound)
    if bound is None:  # the tasks fit their prompts with the model's tokenizer, as in `mmst run`
        with gin.unlock_config():
            gin.bind_parameter("tasks.tokenizer.path", str(tokenizer))
    vocab = HFTokenizerVocabulary(str(tokenizer))
    return programs.with_token_counts(problems.problem_prompts(configurables.Tasks()), vocab.encode_prompts), tokenizer


def main(argv: Sequence[str]) -> int:
    from mmst_jax.mmst import programs
    from mmst_jax.sharding import MESH_AXES

    parser = argparse.ArgumentParser(prog="mmst plan", description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="write the report as JSON here")
    parser.add_argument("--no_compile", action="store_true", help="analytic estimate only")
    args = parser.parse_args(argv)
    mesh_config = configurables.mesh_config()
    if mesh_config.num_devices is None:
        raise ValueError("the topology does not say how many devices its slice has: set "
                         "partitioning.MeshConfig.num_devices (the files in gin_configs/topologies do)")
    base = configurables.base()
    prompts, tokenizer = _prompts(base)
    settings = programs.settings_for(
        base=base, config=configurables.run_config(), finetune=configurables.train_config("finetune"),
        mesh_shape=dict(zip(MESH_AXES, mesh_config.resolve(mesh_config.num_devices))), rules=mesh_config.rules,
        tokenizer=tokenizer or programs.base_tokenizer(base), strict=False)
    run_programs = programs.check(programs.describe(settings, prompts))
    report = memory_plan.plan(run_programs, mesh_config=mesh_config, devices=_devices, compile=not args.no_compile,
                              target=configurables.PlanOptions().target)
    report["model"] = programs.base_model(base, strict=False)[1]
    report["prompts"] = "measured" if prompts is not None else "budget (no tokenizer at hand)"
    if args.output:
        write_text(args.output, memory_plan.to_json(report))
    print(f"model: {report['model']}; prompt lengths: {report['prompts']}")
    print(memory_plan.format_table(report["rows"]))
    print()
    print(memory_plan.format_cost(report["round"]))
    return 0
