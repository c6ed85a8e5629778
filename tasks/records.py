"""Reading the JSON Lines records a round writes (sample / verified / translated, see DESIGN.md).

Only what the tasks need is checked: `prompt` and `completion` strings, `method` (`text` or
`code`), `dataset`, `gold`; `correct`, where present, must be a bool. A bad line raises
`RecordError` naming the file and the line, or with `skip_bad=True` is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import tensorflow as tf
from etils import epath

from tasks import prompts

REQUIRED = {"prompt": str, "completion": str, "method": str, "dataset": str}


class RecordError(ValueError):
    """A record file that is missing or holds a line that is not a usable record."""


@dataclasses.dataclass
class Records:
    records: list[dict]
    skipped: list[tuple[str, int, str]]  # (file, line, reason)


def expand(patterns: Sequence[str]) -> list[str]:
    """File names matching the patterns (globs allowed, local or gs://); each pattern must match."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files = []
    for pattern in patterns:
        matched = sorted(tf.io.gfile.glob(str(pattern)))
        if not matched:
            raise RecordError(f"no record files match {pattern!r}")
        files += matched
    return files


def _problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind):
            return f"field {key!r} missing or not a {kind.__name__}"
    if record["method"] not in prompts.METHODS:
        return f"method {record['method']!r} is not one of {prompts.METHODS}"
    if "gold" not in record:
        return "field 'gold' missing"
    if "correct" in record and not isinstance(record["correct"], bool):
        return "field 'correct' is not a bool"
    return None


def read_records(patterns: Sequence[str], skip_bad: bool = False) -> Records:
    records, skipped = [], []
    for name in expand(patterns):
        with epath.Path(name).open() as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    reason = _problem(record)
                except json.JSONDecodeError as e:
                    reason = f"not valid JSON ({e.msg} at column {e.colno})"
                if reason is None:
                    records.append(record)
                elif skip_bad:
                    skipped.append((name, number, reason))
                else:
                    raise RecordError(f"{name}:{number}: {reason}; pass skip_bad=True to skip and count such lines")
    return Records(records, skipped)
