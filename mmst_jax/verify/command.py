"""`mmst verify --input samples.jsonl --output verified.jsonl`: verify sample records.

Reads one or more sample files, verifies every record (text: answer extraction; code: the
sandbox, on every lane), and writes the verified records in the input order, atomically. While it
runs, finished records are appended to ``OUTPUT.partial``; a run started again after a crash
reuses them (and any records already in OUTPUT), so only what is missing is verified. A progress
bar and a summary (statuses, correct per method, the sandbox's protections) go to stderr.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from typing import Sequence

from etils import epath

from mmst_jax.verify import records as rec
from mmst_jax.verify.results import Limits
from mmst_jax.verify.sandbox import Sandbox
from mmst_jax.verify.verifier import verify_records


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmst verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", action="append", required=True, metavar="FILE",
                   help="sample records (JSON Lines); repeat for several files")
    p.add_argument("--output", required=True, metavar="FILE", help="verified records (JSON Lines)")
    p.add_argument("--lanes", type=int, default=None,
                   help="programs run at once (default: 4 per core)")
    p.add_argument("--timeout", type=float, default=Limits.timeout_s,
                   help="wall-clock seconds per program (default: %(default)s)")
    p.add_argument("--memory-mb", type=int, default=Limits.memory_mb,
                   help="memory per program in MiB (default: %(default)s)")
    p.add_argument("--isolation", choices=("auto", "root", "userns", "none"), default="auto",
                   help="how programs are isolated (default: %(default)s, the strongest available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _load(inputs: Sequence[str]) -> list[dict]:
    samples, seen = [], {}
    for path in inputs:
        for n, record in enumerate(rec.read_samples(path), 1):
            key = rec.record_key(record)
            if key in seen:
                raise rec.RecordError(f"{path}: record {n} repeats sample {key} of {seen[key]}")
            seen[key] = f"{path} record {n}"
            samples.append(record)
    return samples


def _summary(out: list[dict], reused: int, seconds: float, sandbox: Sandbox | None) -> str:
    status = collections.Counter(r["status"] for r in out)
    lines = [f"verified {len(out)} records in {seconds:.1f} s ({reused} reused from an earlier run)"]
    for method in rec.METHODS:
        group = [r for r in out if r["method"] == method]
        if group:
            correct = sum(r["correct"] for r in group)
            lines.append(f"  {method}: {correct}/{len(group)} correct")
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    if sandbox is not None:
        lines.append("  " + sandbox.protections.describe())
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
        samples = _load(args.input)
    except (rec.RecordError, FileNotFoundError, ValueError) as e:
        print(f"mmst verify: {e}", file=sys.stderr)
        return 2
    output = epath.Path(args.output)
    partial = output.parent / (output.name + ".partial")
    known = {}
    for v in rec.read_verified(output) + rec.read_verified(partial):
        known[rec.record_key(v)] = v
    results: list[dict | None] = [None] * len(samples)
    todo = []
    for i, s in enumerate(samples):
        v = known.get(rec.record_key(s))
        if v is not None and v.get("completion") == s["completion"] and v.get("gold") == s["gold"]:
            results[i] = v
        else:
            todo.append(i)
    reused = len(samples) - len(todo)
    start = time.monotonic()
    sandbox = None
    if todo:
        output.parent.mkdir(parents=True, exist_ok=True)
        progress = None
        if not args.no_progress:
            from tqdm import tqdm
            progress = tqdm(total=len(todo), unit="rec", desc="verify", file=sys.stderr)
        with partial.open("a") as log_file:
            def on_result(j: int, verified: dict) -> None:
                results[todo[j]] = verified
                log_file.write(rec.dumps(verified))
                log_file.flush()
                if progress is not None:
                    progress.update(1)

            needs_sandbox = any(samples[i]["method"] == "code" for i in todo)
            try:
                if needs_sandbox:
                    sandbox = Sandbox(lanes=args.lanes, limits=limits, isolation=args.isolation)
                verify_records([samples[i] for i in todo], sandbox=sandbox, limits=limits,
                               on_result=on_result)
            finally:
                if sandbox is not None:
                    sandbox.close()
                if progress is not None:
                    progress.close()
    if todo or partial.exists() or not output.exists():
        rec.write_jsonl(output, results)  # type: ignore[arg-type]
        if partial.exists():
            partial.unlink()
    print(_summary(results, reused, time.monotonic() - start, sandbox), file=sys.stderr)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
