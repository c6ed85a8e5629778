"""`mmst verify --input samples.jsonl --output verified.jsonl`: verify sample records.

Reads one or more sample files, verifies every record (text: answer extraction; code: the
sandbox, on every lane), and writes the verified records in the input order, atomically. While it
runs, finished records are appended to ``OUTPUT.partial``; a run started again after a crash
reuses them (and any records already in OUTPUT), so only what is missing is verified. A progress
bar and a summary (statuses, correct per method, copied answers, the sandbox's protections) go
to stderr. Without every protection the sandbox refuses to run the programs (exit status 2, saying
what is missing and how to get it); ``--allow_unprotected`` runs them anyway, loudly, and marks
each code record ``unprotected: true``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mmst_jax.records import METHODS, RecordError
from mmst_jax.verify.files import verify_files
from mmst_jax.verify.results import Limits
from mmst_jax.verify.sandbox import UnprotectedSandboxError


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
    p.add_argument("--allow_unprotected", "--allow-unprotected", action="store_true",
                   help="run the programs even when the sandbox lacks a protection (it says which); "
                        "only on a machine you can afford to lose")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _describe(summary: dict) -> str:
    lines = [f"verified {summary['records']} records in {summary['seconds']:.1f} s "
             f"({summary['reused']} reused from an earlier run)"]
    for method in METHODS:
        if summary["total"][method]:
            lines.append(f"  {method}: {summary['correct'][method]}/{summary['total'][method]} correct")
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in summary["status"].items()))
    copied = {m: n for m, n in summary["copied"].items() if n}
    if copied:
        lines.append("  copied (correct, kept out of training): "
                     + ", ".join(f"{m} {n}" for m, n in copied.items()))
    if summary["protections"]:
        lines.append("  " + summary["protections"])
    if summary["unprotected"]:
        lines.append("  WARNING: the programs ran WITHOUT every protection (--allow_unprotected); "
                     "their records say unprotected: true")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
        summary = verify_files(args.input, args.output, limits=limits, lanes=args.lanes,
                               isolation=args.isolation, progress=not args.no_progress,
                               allow_unprotected=args.allow_unprotected)
    except (RecordError, FileNotFoundError, ValueError, UnprotectedSandboxError) as e:
        print(f"mmst verify: {e}", file=sys.stderr)
        return 2
    print(_describe(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
