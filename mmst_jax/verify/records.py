"""Sample and verified records (DESIGN.md): reading with clear errors, keys, atomic writing.

Public API:
  - ``read_samples(path) -> list[dict]``: a JSON Lines file of sample records, each checked; a
    bad line raises ``RecordError`` naming the file and line.
  - ``check_sample(record)``: raises ``ValueError`` saying what is wrong with one record.
  - ``record_key(record)``: (dataset, problem_id, method, round, sample_index), a sample's identity.
  - ``read_verified(path)``: verified records, skipping a torn last line (a run killed mid-write).
Writing goes through ``mmst_jax.records.write_jsonl`` (atomic: temporary name, then rename).

Paths go through ``etils.epath``, so ``gs://`` works as local paths do.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from etils import epath

from mmst_jax.records import METHODS, RecordError, read_jsonl, record_key  # noqa: F401
from mmst_jax.verify.answers import answer_kind, gold_answer

REQUIRED = ("problem_id", "dataset", "method", "sample_index", "completion", "gold")
STATUS_FIELDS = ("answer", "correct", "status", "detail", "elapsed_ms")


def check_sample(record: Any) -> None:
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


def _lines(path: str | epath.Path) -> Iterable[tuple[int, str]]:
    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    with p.open("r") as f:
        for lineno, line in enumerate(f, 1):
            yield lineno, line


def read_samples(path: str | epath.Path) -> list[dict]:
    return read_jsonl(path, check_sample, error=RecordError)


def read_verified(path: str | epath.Path) -> list[dict]:
    """Verified records that are complete; a torn or malformed line is skipped."""
    out = []
    if not epath.Path(path).exists():
        return out
    for _, line in _lines(path):
        if not line.endswith("\n"):
            break  # torn last line
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and all(f in record for f in (*REQUIRED, *STATUS_FIELDS)):
            out.append(record)
    return out


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"
