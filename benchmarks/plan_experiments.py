"""`mmst plan` of every experiment config (the files of gin_configs/experiments that name a
topology): the run's own programs compiled for its slice, memory per program and a round's cost.

Runs `mmst plan` once per experiment, each in a fresh process (a simulated or ahead-of-time device
set per process), and prints the README's table and, on its last line, one JSON object.

    python benchmarks/plan_experiments.py [--experiments bloom-176b_v4-512,...] [--target auto]
        [--gin.NAME=VALUE ...]     # passed to every `mmst plan`, e.g. a tokenizer for real prompt lengths

With libtpu installed (`pip install "jax[tpu]"`, no TPU needed) the programs are compiled by the
TPU compiler for each slice's chip layout; otherwise on simulated CPU devices (see `mmst plan`).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmst_jax import memory_plan  # noqa: E402

EXPERIMENTS = sorted(p.stem for p in (ROOT / "gin_configs" / "experiments").glob("*.gin")
                     if "include 'topologies/" in p.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--target", default="auto", choices=("auto", "tpu", "cpu"))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per experiment")
    args, gin_flags = parser.parse_known_args()

    rows, summary = [], {}
    for name in args.experiments.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "plan.json")
            cmd = [sys.executable, "-m", "mmst_jax", "plan", "--output", out, f"--gin_file=experiments/{name}.gin",
                   f"--gin.mmst.plan.target='{args.target}'", *gin_flags]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
            if result.returncode != 0:
                print(f"{name}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
                continue
            with open(out) as f:
                report = json.load(f)
        rows += report["rows"]
        summary[name] = {
            "model": report["model"], "prompts": report["prompts"],
            "programs": {r["step"]: {"target": r["target"], "compiled_peak_gib": None if r["compiled_peak"] is None
                                     else round(r["compiled_peak"] / memory_plan.GIB, 2),
                                     "analytic_gib": round(r["analytic_total"] / memory_plan.GIB, 2),
                                     "hbm_gib": r["hbm_gib"], "fits": r["fits"],
                                     "compile_seconds": r["compile_seconds"]} for r in report["rows"]},
            "round_hours": None if report["round"]["total_seconds"] is None
            else round(report["round"]["total_seconds"] / 3600, 2)}
        print(f"{name}: done", file=sys.stderr)
        print(memory_plan.format_cost(report["round"]), file=sys.stderr)
    print(memory_plan.format_table(rows))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
