"""Verifying a stage's sample records, surviving a verifier that crashes.

`verify_part(samples_file, verified_file, limits)` verifies this host's part file with the
sandboxed verifier (mmst_jax.verify): text answers are extracted, programs run in the sandbox,
answers compared with the gold outside it. Each finished record is appended to a hidden partial
file at once, so a run killed in the middle verifies only what is missing when started again.

If the verifier itself fails (its worker dies, the sandbox cannot start, ...), it is restarted up to
`limits.restarts` times, keeping what it had finished; the records still unverified after that are
written as lost — `status` "error", `correct` false, `lost` true, `detail` naming the failure — so the
round continues with what was verified, and the loss is counted (`summarize`) and reported.
"""

from __future__ import annotations

import collections
import json
import logging
from typing import Sequence

from etils import epath

from mmst_jax import faults
from mmst_jax.records import read_complete_lines, read_jsonl, record_key, remove, write_jsonl

log = logging.getLogger(__name__)


def _read_partial(path: epath.Path) -> dict[tuple, dict]:
    """The complete lines of a partial file, by record key (a torn last line from a kill is ignored)."""
    return {record_key(r): r for r in read_complete_lines(path)}


def lost_record(sample: dict, why: str) -> dict:
    return {**sample, "answer": None, "correct": False, "status": "error",
            "detail": f"verifier failed: {why}"[:200], "elapsed_ms": 0.0, "lost": True}


def verify_part(samples_file: epath.PathLike, verified_file: epath.PathLike, *, timeout_s: float = 2.0,
                memory_mb: int = 256, lanes: int | None = None, restarts: int = 1,
                progress: bool = True, desc: str = "verifying") -> epath.Path:
    """Verifies one part file into another (same order); an existing output is kept as it is."""
    from mmst_jax.verify.results import Limits
    from mmst_jax.verify.sandbox import Sandbox
    from mmst_jax.verify.verifier import verify_records

    verified_file = epath.Path(verified_file)
    if verified_file.exists():
        return verified_file
    samples = read_jsonl(samples_file)
    partial = verified_file.parent / f".{verified_file.name}.partial"
    verified_file.parent.mkdir(parents=True, exist_ok=True)
    known = _read_partial(partial)
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb)
    failure = None
    for attempt in range(restarts + 1):
        todo = [s for s in samples if record_key(s) not in known]
        if not todo:
            break
        from tqdm import tqdm

        bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=desc, unit="rec",
                   disable=not progress, leave=False)
        try:
            with partial.open("a") as out:
                def on_result(_: int, v: dict) -> None:
                    faults.point("verify.record")
                    known[record_key(v)] = v
                    out.write(json.dumps(v, ensure_ascii=False, sort_keys=True) + "\n")
                    out.flush()
                    bar.update(1)

                needs_box = any(s["method"] == "code" for s in todo)
                box = Sandbox(lanes=lanes, limits=limits) if needs_box else None
                try:
                    verify_records(todo, sandbox=box, limits=limits, on_result=on_result)
                finally:
                    if box is not None:
                        box.close()
            failure = None
        except Exception as e:  # noqa: BLE001 — any verifier failure: restart, then count the loss
            failure = f"{type(e).__name__}: {e}"
            log.warning("%s: the verifier failed (attempt %d of %d): %s", samples_file, attempt + 1,
                        restarts + 1, failure)
        finally:
            bar.close()
    out_records = []
    for s in samples:
        v = known.get(record_key(s))
        if v is None or v.get("completion") != s["completion"]:
            v = lost_record(s, failure or "no result")
        out_records.append(v)
    lost = sum(1 for v in out_records if v.get("lost"))
    if lost:
        log.warning("%s: %d of %d records could not be verified (counted as lost)", samples_file, lost,
                    len(out_records))
    write_jsonl(verified_file, out_records)
    remove(partial)
    return verified_file


def summarize(verified: Sequence[dict]) -> dict[str, dict[str, int]]:
    """{method: {"correct", "total", "lost"}} over verified records."""
    out = {}
    by_method = collections.defaultdict(list)
    for r in verified:
        by_method[r["method"]].append(r)
    for method, rs in sorted(by_method.items()):
        out[method] = {"correct": sum(1 for r in rs if r.get("correct")), "total": len(rs),
                       "lost": sum(1 for r in rs if r.get("lost"))}
    return out
