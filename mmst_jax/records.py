"""JSON Lines files: reading with errors that name the file and line, writing atomically.

Every record file of the project (prompts, samples, verified records, training examples) is one
JSON object a line. Paths go through `etils.epath`, so `gs://` works as local paths do. No JAX here:
the verifier uses this module too.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

from etils import epath


class JsonlError(ValueError):
    """A line that is not a valid record; the message names the file and line."""


def read_jsonl(path: epath.PathLike, check: Callable[[dict], None] | None = None,
               error: type[JsonlError] = JsonlError) -> list[dict[str, Any]]:
    """Every record of a JSON Lines file, blank lines skipped.

    A line that is not a JSON object, or that `check(record)` rejects with a ValueError, raises
    `error` with the message "PATH:LINE: what is wrong".
    """
    path = epath.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    records = []
    with path.open("r") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{line_no}: a record must be a JSON object, not "
                            f"{type(record).__name__}")
            if check is not None:
                try:
                    check(record)
                except ValueError as e:
                    raise error(f"{path}:{line_no}: {e}") from None
            records.append(record)
    return records


def write_jsonl(path: epath.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Writes records under a temporary name, then renames: readers never see half a file."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with tmp.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
