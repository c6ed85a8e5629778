"""`mmst run`: the MMST loop, resumable, configured by gin.

    mmst run --gin_file=smoke.gin                         # the CPU smoke run (runs/smoke)
    mmst run --gin_file=smoke.gin --gin.RUN_DIR="'runs/x'"
    mmst run --gin_file=experiments/bloom-7b1_v4-32.gin --gin.HF_CHECKPOINT="'/gcs/B/bloom-7b1'"

Running the same command again resumes the run. A run directory holding a run of another
configuration is refused; `--allow_config_change` continues it with the new one. Settings: see
mmst_jax/cli/configurables.py. The tasks fit their prompts with the run's own tokenizer
(RUN_DIR/round_000/checkpoint/tokenizer.json), unless the config binds `tasks.tokenizer.path`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Sequence

import gin

from mmst_jax.cli import configurables


def bind_run_tokenizer(run_dir: str) -> None:
    """Points the tasks' tokenizer at the run's, unless the config names one."""
    from mmst_jax.mmst import rundir

    try:
        gin.query_parameter("tasks.tokenizer.path")
    except ValueError:
        with gin.unlock_config():
            gin.bind_parameter("tasks.tokenizer.path", str(rundir.tokenizer_path(rundir.RunDir(run_dir))))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst run", description=__doc__.split("\n")[0])
    parser.add_argument("--allow_config_change", action="store_true",
                        help="continue a run directory that holds another configuration, with this one")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(list(argv))
    setup_logging()
    start_devices(configurables.RunOptions())
    run_dir = configurables.run_dir()
    metrics = run_from_gin(quiet=args.quiet, allow_config_change=args.allow_config_change)
    print(f"report: {run_dir}/report/report.html ({len(metrics.get('rounds', []))} rounds)", file=sys.stderr)
    return 0


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax", "orbax", "tensorflow", "fsspec", "gcsfs", "google"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def start_devices(options: configurables.RunOptions) -> None:
    """What must happen once per process, before JAX starts: simulated devices, jax.distributed."""
    if options.simulated_devices:
        from mmst_jax.distributed import simulate_cpu_devices

        simulate_cpu_devices(options.simulated_devices)
    if options.distributed:
        configurables.initialize_distributed()


def run_from_gin(*, quiet: bool = False, allow_config_change: bool = False, reuse_base_from: str | None = None,
                 reuse_samples_from: str | None = None) -> dict:
    """One run of the parsed gin configuration (devices started); returns its metrics.
    `reuse_base_from` (default: the config's `mmst.run.reuse_base_from`) and `reuse_samples_from`:
    see mmst_jax.mmst.loop.run_mmst."""
    from mmst_jax.mmst import loop

    options = configurables.RunOptions()
    run_dir = configurables.run_dir()
    config = configurables.run_config()
    base = configurables.base()
    finetune = configurables.train_config("finetune")
    if quiet:  # no bar anywhere: sampling, verification and both trainings
        config = dataclasses.replace(config, progress=False)
        finetune = dataclasses.replace(finetune, progress_bar=False)
        if base.train is not None:
            base = dataclasses.replace(base, train=dataclasses.replace(base.train, progress_bar=False))
    mesh = rules = None
    if options.use_mesh_config:
        mesh_config = configurables.mesh_config()
        mesh, rules = mesh_config.make_mesh(), mesh_config.rules
    tasks = configurables.Tasks()
    config_text = gin.config_str()
    bind_run_tokenizer(run_dir)
    return loop.run_mmst(run_dir, config, tasks, base, finetune, config_text=config_text,
                         allow_config_change=allow_config_change, mesh=mesh, rules=rules, title=options.title,
                         reuse_base_from=reuse_base_from or options.reuse_base_from,
                         reuse_samples_from=reuse_samples_from, check_memory=options.check_memory)
