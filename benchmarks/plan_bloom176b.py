"""Memory plan of BLOOM-176B fine-tuning and sampling on named TPU slices: which slices fit.

Runs `mmst plan` once per topology, each in a fresh process (a simulated or ahead-of-time device set
per process), and prints the table of the README and, on its last line, one JSON object.

    python benchmarks/plan_bloom176b.py [--topologies v4-128,v4-512,v5e-256,v5p-128] [--target auto]

With libtpu installed (`pip install "jax[tpu]"`, no TPU needed) the steps are compiled by the TPU
compiler for each slice's chip layout; otherwise on simulated CPU devices (see mmst plan).
The workload is the MMST default: fine-tuning on 256 sequences of 1024 tokens per step (bf16
parameters and AdamW moments, bf16 compute, full remat), sampling 256 rows with a 2048-slot cache.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mmst_jax import memory_plan  # noqa: E402

TOPOLOGIES = ["v4-32", "v4-128", "v4-512", "v5e-256", "v5p-128"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--model", default="bloom-176b")
    parser.add_argument("--target", default="auto", choices=("auto", "tpu", "cpu"))
    parser.add_argument("--train_batch", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per topology")
    args = parser.parse_args()

    rows = []
    for name in args.topologies.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "plan.json")
            cmd = [sys.executable, "-m", "mmst_jax", "plan", "--output", out,
                   f"--gin_file=topologies/{name}.gin", f"--gin.plan.model_preset='{args.model}'",
                   f"--gin.plan.target='{args.target}'", f"--gin.plan.train_batch={args.train_batch}"]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if result.returncode != 0:
                print(f"{name}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
                continue
            with open(out) as f:
                rows += json.load(f)
            print(f"{name}: done", file=sys.stderr)
    print(memory_plan.format_table(rows))
    summary = {
        f"{r['slice']}/{r['step']}": {
            "target": r["target"], "compiled_peak_gib": None if r["compiled_peak"] is None
            else round(r["compiled_peak"] / memory_plan.GIB, 2),
            "analytic_gib": round(r["analytic_total"] / memory_plan.GIB, 2), "hbm_gib": r["hbm_gib"],
            "fits": r["fits"], "compile_seconds": r["compile_seconds"]}
        for r in rows}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
