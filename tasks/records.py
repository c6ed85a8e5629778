"""Reading the JSON Lines records a round writes (sample / verified / translated / train records,
see docs/architecture.md), for the tasks that read them.

Only what the tasks need is checked: `prompt` and `completion` strings, `method` (`text` or
`code`), `dataset`, `gold`; `correct`, where present, must be a bool. A bad line raises
`mmst_jax.records.RecordError` naming the file and the line, or with `skip_bad=True` is skipped
and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from mmst_jax.records import METHODS, RecordError, expand, read_jsonl  # noqa: F401  (RecordError: the error raised)

REQUIRED = {"prompt": str, "completion": str, "method": str, "dataset": str}


@dataclasses.dataclass
class Records:
    records: list[dict]
    skipped: list[tuple[str, int, str]]  # (file, line, reason)


def check_record(record: dict) -> None:
    """Raises ValueError saying what a record lacks for the tasks."""
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind):
            raise ValueError(f"field {key!r} missing or not a {kind.__name__}")
    if record["method"] not in METHODS:
        raise ValueError(f"method {record['method']!r} is not one of {METHODS}")
    if "gold" not in record:
        raise ValueError("field 'gold' missing")
    if "correct" in record and not isinstance(record["correct"], bool):
        raise ValueError("field 'correct' is not a bool")


def read_records(patterns: Sequence[str], skip_bad: bool = False) -> Records:
    records, skipped = [], []
    on_bad = (lambda name, line, reason: skipped.append((name, line, reason))) if skip_bad else None
    for name in expand(patterns):
        try:
            records += read_jsonl(name, check_record, on_bad=on_bad)
        except RecordError as e:
            raise RecordError(f"{e}; pass skip_bad=True to skip and count such lines") from None
    return Records(records, skipped)
