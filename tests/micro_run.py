"""`mmst run` on the micro configuration (gin_configs/runs/smoke_micro.gin) in a fresh process, and
what a run directory holds once it ends: its records, metrics.json and evaluation summaries."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MICRO = "gin_configs/runs/smoke_micro.gin"


def mmst_run(run_dir, *flags, faults=None, timeout=600) -> subprocess.CompletedProcess:
    """`mmst run --quiet` on the micro config into `run_dir`; `faults` sets MMST_FAULTS (mmst_jax/faults.py)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    env.pop("MMST_FAULTS", None)
    if faults:
        env["MMST_FAULTS"] = faults
    cmd = [sys.executable, "-m", "mmst_jax", "run", "--quiet", f"--gin_file={MICRO}", f"--gin.RUN_DIR='{run_dir}'",
           *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def records(run_dir) -> dict[str, list[dict]]:
    """Every record file of a run (relative path -> records), verifier timings left out."""
    out = {}
    for path in sorted(pathlib.Path(run_dir).rglob("*.jsonl")):
        rel = str(path.relative_to(run_dir))
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for r in rows:
            r.pop("elapsed_ms", None)
        out[rel] = rows
    return out


def results(run_dir):
    """(records, report/metrics.json, every round's eval/summary.json) of a local run directory."""
    run_dir = pathlib.Path(run_dir)
    summaries = {str(p.relative_to(run_dir)): json.loads(p.read_text()) for p in run_dir.glob("round_*/eval/summary.json")}
    return records(run_dir), json.loads((run_dir / "report" / "metrics.json").read_text()), summaries
