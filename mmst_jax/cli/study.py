"""`mmst study`: every mode of a study on every seed, then study.json and study.html.

    mmst study --gin_file=study_smoke.gin
    mmst study --gin_file=study_smoke.gin --gin.STUDY_SEEDS=[6,7,8] --gin.STUDY_DIR="'/tmp/s'"

The config is an `mmst run` config that also binds `mmst.study.{seeds, directory, modes}`
(mmst_jax.mmst.study). Each run is that config parsed again with `SEED = S`, `RUN_DIR =
'STUDY_DIR/seed_S/MODE'` and the mode's `mmst.ModeConfig.{mode, cap_to}` bound after the command
line's own flags; the first mode of a seed trains its base model, the others reuse it and its
round 1 samples. Running the command again resumes: finished runs are checked and skipped, an
unfinished one resumes. On several hosts every host runs the same sequence.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import gin

from mmst_jax.cli import configurables, run


# What `run_bindings` sets for every run: a command-line binding of one of these would be overridden.
PER_RUN = {"SEED": "mmst.study.seeds", "RUN_DIR": "mmst.study.directory",
           "ModeConfig.mode": "mmst.study.modes", "ModeConfig.cap_to": "mmst.study.modes"}


def refuse_per_run_bindings(bindings: Sequence[str]) -> None:
    """Raises StudyError for a flag binding what the study sets for each of its runs."""
    from mmst_jax.mmst.study import StudyError

    for binding in bindings:
        name = binding.partition("=")[0].strip()
        for setting, source in PER_RUN.items():
            if name == setting or name.endswith("." + setting):
                raise StudyError(f"--gin.{name}: the study sets it for each of its runs (from {source}), so "
                                 f"the flag would change nothing; remove it, or bind {source} instead")


def run_bindings(seed: int, directory: str, settings) -> list[str]:
    """The bindings that make the config one run of the study."""
    return [f"SEED = {seed}", f"RUN_DIR = {directory!r}", f"mmst.ModeConfig.mode = {settings['mode']!r}",
            f"mmst.ModeConfig.cap_to = {settings.get('cap_to')!r}"]


def main(argv: Sequence[str], gin_files: Sequence[str] = (), bindings: Sequence[str] = ()) -> int:
    from mmst_jax import cli
    from mmst_jax.distributed import host_info
    from mmst_jax.mmst import study as study_lib

    parser = argparse.ArgumentParser(prog="mmst study", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(list(argv))
    refuse_per_run_bindings(bindings)
    run.setup_logging()
    study = configurables.Study()
    if configurables.macro("SEED") is None:
        raise study_lib.StudyError("the study's config binds no SEED macro; its runs' seeds are SEED (bind "
                                   "tasks' and training's seeds to %SEED, as gin_configs/runs/study_smoke.gin does)")
    run.start_devices(configurables.RunOptions())
    first: dict[int, str] = {}
    for seed, mode, directory in study_lib.runs(study):
        gin.clear_config()
        cli.parse_gin(gin_files, list(bindings) + run_bindings(seed, directory, study.modes[mode]))
        print(f"study: seed {seed}, mode {mode} -> {directory}", file=sys.stderr, flush=True)
        shared = first.setdefault(seed, directory)
        run.run_from_gin(quiet=args.quiet, reuse_base_from=None if shared == directory else shared,
                         reuse_samples_from=None if shared == directory else shared)
    if host_info()[0] == 0:
        summary = study_lib.write_study(study)
        for c in summary["claims"]:
            ci = "" if c["ci95"] is None else f" [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]"
            mean = "–" if c["mean"] is None else f"{c['mean']:+.1f}"
            print(f"{c['name']}: {mean}{ci} holds={c['holds']}", flush=True)
        print(f"study: {study.directory}/study.json, study.html", file=sys.stderr)
    return 0
