"""Resumable verification of sample files: the one used by `mmst verify` and by the MMST loop.

`verify_files(inputs, output, ...)` reads sample records (files, or directories of *.jsonl),
verifies them with the sandboxed verifier (text answers extracted, programs run in the sandbox,
answers compared with the gold outside it) and writes the verified records to `output` in the input
order, atomically. Each finished record is appended to a partial file at once (on gs://, which
cannot append, written as numbered objects every 64 records: `PartialLog`); a run started again
after a kill reuses what the partial file and an existing output hold for samples that have not
changed, so only what is missing is verified.

If the verifier itself fails (its worker dies, the sandbox cannot start, ...), it is restarted up to
`restarts` times, keeping what it had finished. What is still unverified after that either raises
the failure or, with `write_lost`, is written as lost — `status` "error", `correct` false, `lost`
true, `detail` naming the failure — so a round continues with what was verified, and the loss is
counted (`summarize`) and reported. `verify_part` is the MMST loop's call: one part file, a hidden
partial file, lost records written.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any, Sequence

from etils import epath
from tqdm import tqdm

from mmst_jax import faults
from mmst_jax.records import (METHODS, VERIFIED_FIELDS, RecordError, dumps, read_complete_lines,
                              read_jsonl, record_key, remove, write_jsonl)
from mmst_jax.verify.answers import answer_kind, gold_answer
from mmst_jax.verify.results import Limits
from mmst_jax.verify.sandbox import Sandbox, UnprotectedSandboxError
from mmst_jax.verify.verifier import verify_records

log = logging.getLogger(__name__)

REQUIRED = ("problem_id", "dataset", "method", "sample_index", "completion", "gold")


# --------------------------------------------------------------------------------------------
# Reading sample records
# --------------------------------------------------------------------------------------------
def check_sample(record: Any) -> None:
    """Raises ValueError saying what keeps a sample record from being verified (a missing field,
    an unknown method, a gold with no answer of its dataset's kind)."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, not {type(record).__name__}")
    missing = [f for f in REQUIRED if f not in record]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)} (a sample record needs "
                         f"{', '.join(REQUIRED)})")
    if record["method"] not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {record['method']!r}")
    if not isinstance(record["completion"], str):
        raise ValueError(f"completion must be a string, not {type(record['completion']).__name__}")
    if not isinstance(record["sample_index"], int) or isinstance(record["sample_index"], bool):
        raise ValueError(f"sample_index must be an integer, not {record['sample_index']!r}")
    if not isinstance(record["dataset"], str) or not record["dataset"]:
        raise ValueError(f"dataset must be a non-empty string, not {record['dataset']!r}")
    kind = answer_kind(record["dataset"], record["gold"])
    if gold_answer(record["gold"], kind) is None:
        raise ValueError(f"gold {str(record['gold'])[:80]!r} has no {kind} answer "
                         f"(dataset {record['dataset']!r})")


def input_files(inputs: Sequence[epath.PathLike]) -> list[str]:
    """Files as given; a directory stands for its *.jsonl files in name order."""
    files = []
    for given in inputs:
        path = epath.Path(given)
        if path.is_dir():
            found = sorted(os.fspath(p) for p in path.glob("*.jsonl"))
            if not found:
                raise FileNotFoundError(f"{path}: a directory with no *.jsonl files")
            files += found
        else:
            files.append(os.fspath(given))
    return files


def read_samples(inputs: Sequence[epath.PathLike], *, check: bool = True) -> list[dict]:
    """The sample records of the inputs, in order. With `check`, every record is checked
    (`check_sample`) and a sample given twice is an error: RecordError naming file and record.
    A missing input raises FileNotFoundError."""
    samples, seen = [], {}
    for path in input_files(inputs):
        for n, record in enumerate(read_jsonl(path, check_sample if check else None), 1):
            if check:
                key = record_key(record)
                if key in seen:
                    raise RecordError(f"{path}: record {n} repeats sample {key} of {seen[key]}")
                seen[key] = f"{path} record {n}"
            samples.append(record)
    return samples


class PartialLog:
    """Where finished verdicts go as they come, so a killed run verifies only what is missing.

    Locally, one hidden file appended to and flushed after every record. On an object store,
    which cannot append, numbered objects `PARTIAL.00000`, `PARTIAL.00001`, ... each written
    whole every `every` records (and when the attempt ends): a kill loses at most that many."""

    def __init__(self, path: epath.Path, every: int = 64):
        from mmst_jax import storage

        self.path, self.every = path, every
        self.remote = storage.is_remote(path)
        self._buffer: list[str] = []
        self._file = None

    def chunks(self) -> list[epath.Path]:
        """The objects written so far (remote), in order."""
        out = []
        while self.remote and (self.path.parent / f"{self.path.name}.{len(out):05d}").exists():
            out.append(self.path.parent / f"{self.path.name}.{len(out):05d}")
        return out

    def __enter__(self) -> "PartialLog":
        if not self.remote:
            self._file = self.path.open("a")
        return self

    def add(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(dumps(record))
            self._file.flush()
            return
        self._buffer.append(dumps(record))
        if len(self._buffer) >= self.every:
            self._flush()

    def _flush(self) -> None:
        from mmst_jax import storage

        if self._buffer:
            storage.write_bytes(self.path.parent / f"{self.path.name}.{len(self.chunks()):05d}",
                                "".join(self._buffer).encode())
            self._buffer = []

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
        else:
            self._flush()

    def remove(self) -> None:
        for chunk in self.chunks():
            remove(chunk)
        remove(self.path)


def _earlier(samples: Sequence[dict], *paths: epath.Path) -> list[dict | None]:
    """For each sample, its verified record from an earlier run (the complete lines of `paths`,
    later ones winning) if that verified the same completion against the same gold, else None."""
    known = {}
    for path in paths:
        for v in read_complete_lines(path):
            if all(f in v for f in (*REQUIRED, *VERIFIED_FIELDS, "copied")):
                known[record_key(v)] = v
    out: list[dict | None] = []
    for s in samples:
        v = known.get(record_key(s))
        same = v is not None and v["completion"] == s["completion"] and v["gold"] == s["gold"]
        out.append(v if same else None)
    return out


# --------------------------------------------------------------------------------------------
# Verifying
# --------------------------------------------------------------------------------------------
def lost_record(sample: dict, why: str) -> dict:
    """A sample the verifier could not verify, counted as lost."""
    return {**sample, "answer": None, "correct": False, "status": "error",
            "detail": f"verifier failed: {why}"[:200], "elapsed_ms": 0.0, "lost": True}


def _attempt(samples: Sequence[dict], results: list[dict | None], partial: epath.Path, bar: tqdm, *,
             limits: Limits, lanes: int | None, isolation: str, sandbox: Sandbox | None,
             allow_unprotected: bool) -> Sandbox | None:
    """Verifies every sample whose result is None, filling `results` and appending each verified
    record to `partial` as it finishes. Returns the sandbox used (None: no code ran)."""
    todo = [i for i, r in enumerate(results) if r is None]
    own = sandbox is None and any(samples[i]["method"] == "code" for i in todo)
    box = (Sandbox(lanes=lanes, limits=limits, isolation=isolation, allow_unprotected=allow_unprotected)
           if own else sandbox)
    try:
        with PartialLog(partial) as out:
            def on_result(j: int, verified: dict) -> None:
                faults.point("verify.record")
                results[todo[j]] = verified
                out.add(verified)
                bar.update(1)

            verify_records([samples[i] for i in todo], sandbox=box, limits=limits, on_result=on_result)
        return box
    finally:
        if own and box is not None:
            box.close()


def verify_files(inputs: Sequence[epath.PathLike], output: epath.PathLike, *,
                 limits: Limits | None = None, lanes: int | None = None, isolation: str = "auto",
                 sandbox: Sandbox | None = None, restarts: int = 0, write_lost: bool = False,
                 check: bool = True, partial: epath.PathLike | None = None, progress: bool = False,
                 desc: str = "verify", allow_unprotected: bool = False) -> dict:
    """Verifies the sample files into `output` (input order, written atomically), reusing what an
    earlier, interrupted run left in the partial file (default `OUTPUT.partial`) or in OUTPUT.

    Code runs in `sandbox` if given (it is left open), else in one made with `lanes`, `limits` and
    `isolation` for each attempt; without every protection that raises UnprotectedSandboxError
    (never retried, never counted as lost) unless `allow_unprotected`. `check`: see
    `read_samples`. Returns ``{"records": n, "status": {status: n}, "correct": {method: n},
    "total": {method: n}, "copied": {method: n}, "reused": n, "seconds": s, "protections": str |
    None, "unprotected": bool}`` (protections None when no code ran; copied: correct but copied).
    """
    limits = limits or Limits()
    samples = read_samples(inputs, check=check)
    output = epath.Path(output)
    partial = epath.Path(partial) if partial is not None else output.parent / f"{output.name}.partial"
    results = _earlier(samples, output, partial, *PartialLog(partial).chunks())
    reused = sum(r is not None for r in results)
    start = time.monotonic()
    protections = failure = None
    unprotected = False
    if reused < len(samples):
        output.parent.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(samples), initial=reused, desc=desc, unit="rec", disable=not progress,
                  leave=False) as bar:
            for attempt in range(restarts + 1):
                if all(r is not None for r in results):
                    break
                try:
                    box = _attempt(samples, results, partial, bar, limits=limits, lanes=lanes,
                                   isolation=isolation, sandbox=sandbox, allow_unprotected=allow_unprotected)
                    if box is not None:
                        protections, unprotected = box.protections.describe(), box.unprotected
                    failure = None
                except UnprotectedSandboxError:
                    raise
                except Exception as e:  # noqa: BLE001 — any verifier failure: restart, then count the loss
                    if attempt == restarts and not write_lost:
                        raise
                    failure = f"{type(e).__name__}: {e}"
                    log.warning("%s: the verifier failed (attempt %d of %d): %s", output, attempt + 1,
                                restarts + 1, failure)
    lost = [i for i, r in enumerate(results) if r is None]
    for i in lost:
        results[i] = lost_record(samples[i], failure or "no result")
    if lost:
        log.warning("%s: %d of %d records could not be verified (counted as lost)", output, len(lost),
                    len(results))
    if reused < len(samples) or partial.exists() or not output.exists() or PartialLog(partial).chunks():
        write_jsonl(output, results)  # type: ignore[arg-type]
        PartialLog(partial).remove()
    counts = summarize(results)  # type: ignore[arg-type]
    return {"records": len(results),
            "status": dict(sorted(collections.Counter(r["status"] for r in results).items())),
            "correct": {m: counts.get(m, {}).get("correct", 0) for m in METHODS},
            "total": {m: counts.get(m, {}).get("total", 0) for m in METHODS},
            "copied": {m: sum(1 for r in results if r["method"] == m and r["correct"] and r.get("copied"))
                       for m in METHODS},
            "reused": reused, "seconds": time.monotonic() - start, "protections": protections,
            "unprotected": unprotected}


def verify_part(samples_file: epath.PathLike, verified_file: epath.PathLike, *, timeout_s: float = 2.0,
                memory_mb: int = 256, lanes: int | None = None, restarts: int = 1,
                progress: bool = True, desc: str = "verifying", allow_unprotected: bool = False) -> epath.Path:
    """The MMST loop's verification of one part file into another (same order): the partial file
    is hidden (`.NAME.partial`), a failing verifier is restarted `restarts` times, and what is still
    unverified then is written as lost; a sandbox lacking a protection stops the run
    (UnprotectedSandboxError) unless `allow_unprotected`. Returns `verified_file`."""
    verified_file = epath.Path(verified_file)
    verify_files([samples_file], verified_file, limits=Limits(timeout_s=timeout_s, memory_mb=memory_mb),
                 lanes=lanes, restarts=restarts, write_lost=True, check=False,
                 partial=verified_file.parent / f".{verified_file.name}.partial", progress=progress,
                 desc=desc, allow_unprotected=allow_unprotected)
    return verified_file


def summarize(verified: Sequence[dict]) -> dict[str, dict[str, int]]:
    """{method: {"correct", "total", "lost"}} over verified records, for each method present."""
    by_method = collections.defaultdict(list)
    for r in verified:
        by_method[r["method"]].append(r)
    return {method: {"correct": sum(1 for r in rs if r.get("correct")), "total": len(rs),
                     "lost": sum(1 for r in rs if r.get("lost"))}
            for method, rs in sorted(by_method.items())}
