"""Throughput of the verifier's sandbox next to a fresh `python` subprocess per program.

Two workloads, each run by the sandbox (with every protection: it refuses to start without one,
the seccomp allow-list included) and by the common practice it replaces — one `python
program.py` subprocess per program, as many at once as there are cores. The two take turns in
several rounds, so that whatever else the machine is doing weighs on both alike:
  - short: small correct PAL-style programs;
  - mix: the same with 10% of programs that never finish (half spin, half sleep) and must be
    killed at the wall-clock limit.
Every result is checked. The last line of stdout is one JSON object with the figures.

    python benchmarks/verifier.py [--short N] [--mix N] [--baseline N] [--timeout S] [--rounds R]

cpu_ms_per_program counts every CPU second spent (host, worker, lanes, programs; for the baseline,
the subprocesses), so it does not depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

from mmst_jax.verify import allowlist
from mmst_jax.verify.results import Limits
from mmst_jax.verify.sandbox import Sandbox

HARNESS = "\nimport json\nprint(json.dumps(solution()))\n"


def short_program(i: int) -> tuple[str, int]:
    a, b, c = i % 97 + 3, i % 13 + 2, i % 7 + 1
    code = (f"def solution():\n"
            f"    apples = {a}\n"
            f"    baskets = {b}\n"
            f"    eaten = {c}\n"
            f"    total = apples * baskets\n"
            f"    for _ in range(eaten):\n"
            f"        total -= 1\n"
            f"    return total\n")
    return code, a * b - c


def never_ends(i: int) -> str:
    if i % 2:
        return "def solution():\n    while True:\n        pass\n"
    return "import time\ndef solution():\n    time.sleep(3600)\n"


def workload(n: int, timeout_share: float) -> tuple[list[str], list[int | None]]:
    programs, expected = [], []
    every = round(1 / timeout_share) if timeout_share else 0
    for i in range(n):
        if every and i % every == every - 1:
            programs.append(never_ends(i))
            expected.append(None)
        else:
            code, value = short_program(i)
            programs.append(code)
            expected.append(value)
    return programs, expected


def run_sandbox(sandbox: Sandbox, programs, expected) -> float:
    """Seconds to run and check the programs."""
    start = time.perf_counter()
    results = sandbox.run(programs)
    seconds = time.perf_counter() - start
    for r, want in zip(results, expected):
        if want is None:
            assert r.status == "timeout", r
        else:
            assert r.status == "ok" and r.value == want, r
    return seconds


def run_subprocesses(programs, expected, timeout_s: float, lanes: int) -> float:
    """Seconds to run and check the programs, each in a fresh `python` subprocess."""
    workdir = tempfile.mkdtemp(prefix="mmst-bench-")

    def one(i: int):
        path = os.path.join(workdir, f"p{i}.py")
        with open(path, "w") as f:
            f.write(programs[i] + HARNESS)
        try:
            out = subprocess.run([sys.executable, path], capture_output=True, timeout=timeout_s,
                                 cwd=workdir, env={})
            return json.loads(out.stdout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            os.unlink(path)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(lanes) as pool:
        got = list(pool.map(one, range(len(programs))))
    seconds = time.perf_counter() - start
    os.rmdir(workdir)
    assert got == expected, "the subprocess baseline gave wrong results"
    return seconds


def cpu_seconds() -> float:
    """CPU time of this process and of every child it has reaped (the workers, the subprocesses)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def sandbox_cpu_per_program(args, limits: Limits, work) -> float:
    """CPU milliseconds per program, all processes counted: a sandbox's worker and lanes are
    reaped when it closes, so their time (and their programs') is in this process's children's.
    The cost of starting and closing a sandbox is measured apart and taken out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu0 = cpu_seconds()
        Sandbox(lanes=args.lanes, limits=limits).close()
        start_stop = cpu_seconds() - cpu0
        cpu0 = cpu_seconds()
        with Sandbox(lanes=args.lanes, limits=limits) as box:
            run_sandbox(box, *work)
    return (cpu_seconds() - cpu0 - start_stop) * 1000 / len(work[0])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", type=int, default=4000, help="short programs for the sandbox")
    p.add_argument("--mix", type=int, default=1000, help="programs in the 10%%-timeout mix")
    p.add_argument("--baseline", type=int, default=200, help="programs for each subprocess run")
    p.add_argument("--timeout", type=float, default=1.0, help="wall-clock limit per program (s)")
    p.add_argument("--lanes", type=int, default=None, help="sandbox lanes (default: 4 per core)")
    p.add_argument("--rounds", type=int, default=4, help="turns the sandbox and the baseline take")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    limits = Limits(timeout_s=args.timeout)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        sandbox = Sandbox(lanes=args.lanes, limits=limits)
    rounds = max(1, args.rounds)
    seconds = {"short": 0.0, "mix": 0.0, "base": 0.0, "base_mix": 0.0}
    counts = dict.fromkeys(seconds, 0)
    with sandbox:
        run_sandbox(sandbox, *workload(200, 0.0))  # warm-up
        for r in range(rounds):
            for key, n, share in (("short", args.short, 0.0), ("mix", args.mix, 0.1)):
                programs, expected = workload(n // rounds, share)
                seconds[key] += run_sandbox(sandbox, programs, expected)
                counts[key] += len(programs)
            for key, share in (("base", 0.0), ("base_mix", 0.1)):
                programs, expected = workload(args.baseline // rounds, share)
                seconds[key] += run_subprocesses(programs, expected, args.timeout, cores)
                counts[key] += len(programs)
        prot = sandbox.protections
    sandbox_cpu_ms = sandbox_cpu_per_program(args, limits, workload(args.short // rounds, 0.0))
    cpu0 = cpu_seconds()
    bprograms, bexpected = workload(max(20, args.baseline // rounds), 0.0)
    run_subprocesses(bprograms, bexpected, args.timeout, cores)
    base_cpu_ms = (cpu_seconds() - cpu0) * 1000 / len(bprograms)
    rate = {k: counts[k] / seconds[k] for k in seconds}
    short_rate, mix_rate, base_rate, base_mix_rate = rate["short"], rate["mix"], rate["base"], rate["base_mix"]
    figures = {
        "programs_per_s": round(short_rate, 1),
        "baseline_programs_per_s": round(base_rate, 1),
        "speedup_vs_subprocess": round(short_rate / base_rate, 1),
        "mix_programs_per_s": round(mix_rate, 1),
        "mix_baseline_programs_per_s": round(base_mix_rate, 1),
        "mix_speedup_vs_subprocess": round(mix_rate / base_mix_rate, 1),
        "cpu_ms_per_program": round(sandbox_cpu_ms, 3),
        "baseline_cpu_ms_per_program": round(base_cpu_ms, 3),
        "cpu_speedup_vs_subprocess": round(base_cpu_ms / sandbox_cpu_ms, 1),
        "timeout_s": args.timeout,
        "cores": cores,
        "lanes": sandbox.n_lanes,
        "baseline_parallel": cores,
        "rounds": rounds,
        "n_short": counts["short"],
        "n_mix": counts["mix"],
        "n_baseline": counts["base"],
        "isolation": prot.mode,
        "protections": prot.active(),
        "missing_protections": prot.missing(),
        "seccomp_allowed_calls": len(allowlist.ALLOWED),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(f"sandbox: {short_rate:.0f} programs/s short, {mix_rate:.0f} programs/s with 10% timeouts "
          f"({prot.describe()})")
    print(f"fresh python subprocess x{cores}: {base_rate:.1f} programs/s short, "
          f"{base_mix_rate:.1f} programs/s with 10% timeouts")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
