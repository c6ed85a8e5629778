"""The MMST loop: round 0 (the base model), then rounds 1..N, the report after each.

    run_mmst(run_dir, config, tasks, base, finetune, config_text=..., mesh=..., rules=...)

Starting it again with the same configuration resumes: finished stages are skipped (their markers
are checked), unfinished ones are resumed from the files they finished, damaged ones are redone.
A run directory holding another configuration is refused unless `allow_config_change`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

from mmst_jax.distributed import barrier, host_info
from mmst_jax.mmst import base as base_lib
from mmst_jax.mmst import finetune as finetune_lib
from mmst_jax.mmst import report, rounds, rundir
from mmst_jax.mmst.config import RunConfig
from mmst_jax.mmst.problems import TaskNames
from mmst_jax.mmst.stages import Base, RunContext, Stages

log = logging.getLogger(__name__)


def run_mmst(run_dir: str | rundir.RunDir, config: RunConfig, tasks: TaskNames, base: Base, finetune: Any, *,
             config_text: str = "", allow_config_change: bool = False, mesh=None, rules=None,
             title: str = "MMST run", reuse_base_from: str | None = None, reuse_samples_from: str | None = None,
             check_memory: bool = True) -> dict:
    """Runs (or resumes) every round and returns report/metrics.json's contents.

    `tasks` names the SeqIO tasks of the run's problems, translations and bootstrap corpus;
    `finetune` is the TrainConfig of every round. Without a mesh the model lives on one device
    (on several hosts: every device, data parallel). `reuse_base_from`: another run directory
    whose round 0 (the base model and its evaluation) is copied in before this run starts, if this
    run has none yet (an ablation next to its main run). Its markers still decide: a base trained
    from other data or settings is found stale and redone. `reuse_samples_from`: a run of the same
    settings but its mode (ModeConfig.mode, cap_to), whose round 1 samples, verified samples and
    translations (they depend on the base model, not on the mode) are copied in the same way (a
    study's modes of one seed). `check_memory`: on accelerators that
    report their memory, the run's programs are compiled for the mesh before the first sample and
    must fit (mmst_jax.mmst.programs, memory_plan.memory_problems).
    """
    import jax

    from mmst_jax.sharding import DEFAULT_RULES, MeshConfig, make_mesh

    run_dir = run_dir if isinstance(run_dir, rundir.RunDir) else rundir.RunDir(run_dir)
    host, _ = host_info()
    if host == 0:
        run_dir.check_config(config_text, allow_config_change)
        if reuse_base_from:
            _copy_stages(rundir.RunDir(reuse_base_from), run_dir, BASE_STAGES, "base model")
        if reuse_samples_from and config.rounds >= 1:
            _copy_stages(rundir.RunDir(reuse_samples_from), run_dir, SHARED_ROUND_STAGES, "round 1 samples")
    barrier("mmst:config")
    if mesh is None:
        mesh = make_mesh((1, 1, 1), jax.devices()[:1]) if jax.process_count() == 1 else MeshConfig().make_mesh()
    ctx = RunContext(run_dir=run_dir, config=config, tasks=tasks, base=base, finetune=finetune, mesh=mesh,
                     rules=tuple(rules or DEFAULT_RULES), stages=Stages(run_dir), check_memory=check_memory)
    ctx.check_programs()  # every host, before anything is trained or sampled
    metrics = {}
    for r in range(config.rounds + 1):
        if r == 0:
            base_lib.base_round(ctx)
        else:
            rounds.run_round(ctx, r)
        if host == 0:
            finetune_lib.remove_work(run_dir, r)
            metrics = report.write_report(run_dir, config.mode.mode, title)
            _log_round(metrics)
        barrier(f"mmst:round{r}")
    if host != 0:  # host 0 wrote the report
        metrics = json.loads((run_dir.report / "metrics.json").read_text())
    return metrics


# (round, stages that must be done in the source): what a reused base and reused samples copy.
BASE_STAGES = (0, ("train", "checkpoint", "eval"))
SHARED_ROUND_STAGES = (1, ("samples", "verified", "translated"))


def _copy_stages(source: rundir.RunDir, target: rundir.RunDir, which: tuple[int, Sequence[str]], what: str) -> None:
    """Copies round r's named stages, local or gs://, each stage's marker after its files: a copy
    cut short leaves stages whose markers are missing or do not match, which the run redoes.
    Nothing is copied when the target already has one of them, or the source lacks a finished one
    (a base model trained from a checkpoint has no `train`, which is not needed)."""
    from mmst_jax import storage

    r, names = which
    needed = [s for s in names if s != "train" or source.stage(r, s).exists()]
    if any(target.stage(r, s).exists() for s in needed):
        return
    if not all(rundir.stage_state(source.stage(r, s)).done for s in needed):
        log.warning("%s has no finished %s to reuse; making it here", source.path, what)
        return
    for name in needed:
        files = storage.files_under(source.stage(r, name))
        markers = [f for f in files if f.rsplit("/", 1)[-1] == rundir.MARKER]
        for rel in [f for f in files if f not in markers] + markers:
            storage.write_bytes(target.stage(r, name) / rel, (source.stage(r, name) / rel).read_bytes())
    log.info("reusing the %s of %s", what, source.path)


def _log_round(metrics: dict) -> None:
    if not metrics.get("rounds"):
        return
    last = metrics["rounds"][-1]
    overall = last["eval"].get("all") or next(iter(last["eval"].values()), {})
    text = ", ".join(f"{m} {100 * v['accuracy']:.1f}%" for m, v in sorted(overall.items()))
    log.info("round %d evaluated: %s", last["round"], text)
    print(f"round {last['round']}: accuracy {text}", flush=True)
