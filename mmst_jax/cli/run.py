"""`mmst run`: the MMST loop (DESIGN.md), resumable, configured by gin.

    mmst run --gin_file=smoke.gin                         # the CPU smoke run (runs/smoke)
    mmst run --gin_file=smoke.gin --gin.RUN_DIR="'runs/x'"
    mmst run --gin_file=experiments/bloom-7b1_v4-32.gin --gin.HF_CHECKPOINT="'gs://.../bloom-7b1'"

Running the same command again resumes the run. A run directory holding a run of another
configuration is refused; `--allow_config_change` continues it with the new one. Settings: see
mmst_jax/mmst/configurables.py; `mmst.run.problems` is `synthetic` (default) or `datasets`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import gin

from mmst_jax.cli import configurables


@gin.configurable("run", module="mmst")
def run_settings(problems: str = "synthetic", datasets: Sequence[str] = (), related_datasets: Sequence[str] = (),
                 use_mesh_config: bool = False, distributed: bool = False, title: str = "MMST run",
                 reuse_base_from: str | None = None) -> dict:
    """The run's problem source; `use_mesh_config`: place the model on the gin-bound
    partitioning.MeshConfig (a topology file); `distributed`: call jax.distributed.initialize first
    (several hosts); `reuse_base_from`: a run directory whose round 0 (base model) to start from."""
    return dict(problems=problems, datasets=tuple(datasets), related_datasets=tuple(related_datasets),
                use_mesh_config=use_mesh_config, distributed=distributed, title=title,
                reuse_base_from=reuse_base_from)


@gin.configurable("synthetic", module="mmst")
def synthetic_settings(families=None, digits=None, steps=None, n_train=None, n_test=None, seed=None,
                       coverage=None, translation_coverage=None, corpus_seed=0) -> dict:
    """The synthetic world of a run (mmst_jax.mmst.problems.synthetic); unbound: the tasks
    package's own (`tasks.synthetic_world.*`, `tasks.bootstrap.*`)."""
    return dict(families=families, digits=digits, steps=steps, n_train=n_train, n_test=n_test, seed=seed,
                coverage=coverage, translation_coverage=translation_coverage, corpus_seed=corpus_seed)


def build(settings: dict):
    """(problems, bootstrap corpus or None, mesh, rules) from the settings."""
    from mmst_jax.mmst import problems as problem_sources

    if settings["problems"] == "synthetic":
        problems, corpus = problem_sources.synthetic(**synthetic_settings())
    elif settings["problems"] == "datasets":
        problems, corpus = problem_sources.datasets(settings["datasets"], settings["related_datasets"]), None
    else:
        raise ValueError(f"mmst.run.problems={settings['problems']!r}; choose one of {problem_sources.SOURCES}")
    mesh = rules = None
    if settings["use_mesh_config"]:
        mesh_config = configurables.mesh_config()
        mesh, rules = mesh_config.make_mesh(), mesh_config.rules
    return problems, corpus, mesh, rules


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst run", description=__doc__.split("\n")[0])
    parser.add_argument("--allow_config_change", action="store_true",
                        help="continue a run directory that holds another configuration, with this one")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    settings = run_settings()
    if settings["distributed"]:
        from mmst_jax.distributed import initialize_distributed

        initialize_distributed()
    from mmst_jax.mmst import loop

    run_dir = configurables.run_dir()
    config = configurables.run_config()
    base = configurables.base()
    finetune = configurables.train_config("finetune")
    if args.quiet:  # no bar anywhere: sampling, verification and both trainings
        import dataclasses

        config = dataclasses.replace(config, progress=False)
        finetune = dataclasses.replace(finetune, progress_bar=False)
        if base.train is not None:
            base = dataclasses.replace(base, train=dataclasses.replace(base.train, progress_bar=False))
    problems, corpus, mesh, rules = build(settings)
    config_text = gin.config_str()
    metrics = loop.run_mmst(run_dir, config, problems, base, finetune, bootstrap=corpus, config_text=config_text,
                            allow_config_change=args.allow_config_change, mesh=mesh, rules=rules,
                            title=settings["title"], reuse_base_from=settings["reuse_base_from"])
    print(f"report: {run_dir}/report/report.html ({len(metrics.get('rounds', []))} rounds)", file=sys.stderr)
    return 0
