"""`mmst verify --input samples.jsonl --output verified.jsonl`: verify sample records.

``verify_files(inputs, output, ...)`` does the work (the MMST loop calls it too); ``main(argv)``
is the command.

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

from mmst_jax.records import write_jsonl
from mmst_jax.verify import records as rec
from mmst_jax.verify.results import Limits
from mmst_jax.verify.sandbox import Sandbox
from mmst_jax.verify.verifier import verify_records


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmst verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", action="append", required=True, metavar="PATH",
                   help="sample records (JSON Lines), or a directory of *.jsonl; repeatable")
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


def _input_files(inputs: Sequence[str]) -> list[str]:
    """Files as given; a directory stands for its *.jsonl files in name order."""
    files = []
    for given in inputs:
        path = epath.Path(given)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.jsonl"))
            if not found:
                raise FileNotFoundError(f"{path}: a directory with no *.jsonl files")
            files += found
        else:
            files.append(given)
    return files


def _load(inputs: Sequence[str]) -> list[dict]:
    samples, seen = [], {}
    for path in _input_files(inputs):
        for n, record in enumerate(rec.read_samples(path), 1):
            key = rec.record_key(record)
            if key in seen:
                raise rec.RecordError(f"{path}: record {n} repeats sample {key} of {seen[key]}")
            seen[key] = f"{path} record {n}"
            samples.append(record)
    return samples


def summarize(verified: Sequence[dict]) -> dict:
    """Counts: {"records", "status": {status: n}, "correct": {method: n}, "total": {method: n}}."""
    return {"records": len(verified),
            "status": dict(sorted(collections.Counter(r["status"] for r in verified).items())),
            "correct": {m: sum(r["correct"] for r in verified if r["method"] == m) for m in rec.METHODS},
            "total": {m: sum(r["method"] == m for r in verified) for m in rec.METHODS}}


def verify_files(inputs: Sequence[str], output: str, *, limits: Limits | None = None,
                 lanes: int | None = None, isolation: str = "auto", progress: bool = False,
                 sandbox: Sandbox | None = None) -> dict:
    """Verifies the sample files into `output` (input order, written atomically), reusing what an
    earlier, interrupted run left in OUTPUT.partial or OUTPUT. Returns ``summarize`` counts plus
    ``reused``, ``seconds`` and ``protections`` (None when no code ran). Raises RecordError for a
    malformed record (file and line named) and FileNotFoundError for a missing input."""
    limits = limits or Limits()
    samples = _load(inputs)
    out_path = epath.Path(output)
    partial = out_path.parent / (out_path.name + ".partial")
    known = {}
    for v in rec.read_verified(out_path) + rec.read_verified(partial):
        known[rec.record_key(v)] = v
    results: list[dict | None] = [None] * len(samples)
    todo = []
    for i, s in enumerate(samples):
        v = known.get(rec.record_key(s))
        if v is not None and v.get("completion") == s["completion"] and v.get("gold") == s["gold"]:
            results[i] = v
        else:
            todo.append(i)
    start = time.monotonic()
    protections = None
    if todo:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), unit="rec", desc="verify", file=sys.stderr)
        own = sandbox is None and any(samples[i]["method"] == "code" for i in todo)
        box = Sandbox(lanes=lanes, limits=limits, isolation=isolation) if own else sandbox
        try:
            with partial.open("a") as log_file:
                def on_result(j: int, verified: dict) -> None:
                    results[todo[j]] = verified
                    log_file.write(rec.dumps(verified))
                    log_file.flush()
                    if bar is not None:
                        bar.update(1)

                verify_records([samples[i] for i in todo], sandbox=box, limits=limits,
                               on_result=on_result)
            protections = box.protections.describe() if box is not None else None
        finally:
            if own and box is not None:
                box.close()
            if bar is not None:
                bar.close()
    if todo or partial.exists() or not out_path.exists():
        write_jsonl(out_path, results)  # type: ignore[arg-type]
        if partial.exists():
            partial.unlink()
    summary = summarize(results)  # type: ignore[arg-type]
    summary.update(reused=len(samples) - len(todo), seconds=time.monotonic() - start,
                   protections=protections)
    return summary


def _describe(summary: dict) -> str:
    lines = [f"verified {summary['records']} records in {summary['seconds']:.1f} s "
             f"({summary['reused']} reused from an earlier run)"]
    for method in rec.METHODS:
        if summary["total"][method]:
            lines.append(f"  {method}: {summary['correct'][method]}/{summary['total'][method]} correct")
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in summary["status"].items()))
    if summary["protections"]:
        lines.append("  " + summary["protections"])
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
        summary = verify_files(args.input, args.output, limits=limits, lanes=args.lanes,
                               isolation=args.isolation, progress=not args.no_progress)
    except (rec.RecordError, FileNotFoundError, ValueError) as e:
        print(f"mmst verify: {e}", file=sys.stderr)
        return 2
    print(_describe(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
