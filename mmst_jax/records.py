"""Records: the schema of the JSON Lines files a run reads and writes, and the one reader and writer.

Every record file of the project (prompts, samples, verified records, training examples) is one
JSON object a line. A sample record (written by sampling) has `SAMPLE_FIELDS`; a verified record
adds `VERIFIED_FIELDS` (the verifier's verdict); a translation also carries `source_method`,
`source_sample_index` and `train_prompt`; a training record adds `source` (`self`, `translation`,
`replay`). A known solution that round 1 adds to its samples (mmst_jax.mmst.rounds, a run binding
`mmst.Tasks.known`) carries `known: true` on its sample, verified and training records.
docs/architecture.md describes every field.

Writes are atomic, so a reader never sees half a file: locally a temporary name in the same
directory, then a rename; on `gs://` one upload of the whole object, which appears only once it is
complete (mmst_jax.storage; nothing appends to an object). No JAX here: the verifier uses this
module too.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from etils import epath

from mmst_jax import storage

METHODS = ("text", "code")
DIRECTIONS = ("text_to_code", "code_to_text")
SAMPLE_FIELDS = ("problem_id", "dataset", "method", "sample_index", "round", "prompt", "completion",
                 "gold", "seed")
VERIFIED_FIELDS = ("answer", "correct", "status", "detail", "elapsed_ms", "copied")


class RecordError(ValueError):
    """A record file that is missing or holds a line that is not a usable record; the message
    names the file and the line."""


def record_key(record: Mapping[str, Any]) -> tuple:
    """A record's identity within a run: (dataset, problem_id, method, round, sample_index,
    source_sample_index); the last is -1 for anything but a translation."""
    return (record["dataset"], str(record["problem_id"]), record["method"], record.get("round", 0),
            record["sample_index"], record.get("source_sample_index", -1))


def part_name(host: int, hosts: int, suffix: str = ".jsonl") -> str:
    """The file a host writes in a sharded directory: `part-{host:05d}-of-{hosts:05d}.jsonl`."""
    return f"part-{host:05d}-of-{hosts:05d}{suffix}"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_jsonl(path: epath.PathLike, check: Callable[[dict], None] | None = None, *,
               error: type[RecordError] = RecordError,
               on_bad: Callable[[str, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Every record of a JSON Lines file, blank lines skipped.

    A line that is not a JSON object, or that `check(record)` rejects with a ValueError, raises
    `error` with the message "PATH:LINE: what is wrong"; with `on_bad`, it is reported as
    `on_bad(path, line, reason)` and skipped instead.
    """
    path = epath.Path(path)
    if not path.exists():
        storage.check_bucket(path)  # a missing or refused bucket says so
        raise FileNotFoundError(f"{path}: no such file")
    records = []
    with path.open("r") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            reason = None
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                reason = f"not valid JSON ({e.msg} at column {e.colno})"
            else:
                if not isinstance(record, dict):
                    reason = f"a record must be a JSON object, not {type(record).__name__}"
                elif check is not None:
                    try:
                        check(record)
                    except ValueError as e:
                        reason = str(e)
            if reason is None:
                records.append(record)
            elif on_bad is not None:
                on_bad(os.fspath(path), line_no, reason)
            else:
                raise error(f"{path}:{line_no}: {reason}")
    return records


def read_complete_lines(path: epath.PathLike) -> list[dict[str, Any]]:
    """The complete records of a file that is being appended to or was cut by a kill: a torn last
    line, or one that does not parse, is left out. A missing file has none."""
    path = epath.Path(path)
    out = []
    if not path.exists():
        return out
    with path.open("r") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


def read_parts(directory: epath.PathLike, error: type[RecordError] = RecordError) -> list[dict]:
    """The records of every `part-*.jsonl` file of a directory, in file order."""
    out = []
    for path in sorted(epath.Path(directory).glob("part-*.jsonl")):
        out += read_jsonl(path, error=error)
    return out


def expand(patterns: str | Sequence[str]) -> list[str]:
    """File names matching the patterns (globs allowed, local or gs://); each pattern must match."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        if any(c in pattern for c in "*?["):
            head, _, tail = pattern.rpartition("/")
            matched = sorted(os.fspath(p) for p in epath.Path(head or ".").glob(tail))
        else:
            matched = [pattern] if epath.Path(pattern).exists() else []
        if not matched:
            raise RecordError(f"no record files match {pattern!r}")
        files += matched
    return files


# --------------------------------------------------------------------------------------------
# Writing, atomically
# --------------------------------------------------------------------------------------------
def write_text(path: epath.PathLike, text: str) -> None:
    """Writes a file atomically (mmst_jax.storage.write_bytes: locally a temporary name, then a
    rename; on gs:// one upload)."""
    storage.write_bytes(path, text.encode("utf-8"))


def write_json(path: epath.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def dumps(record: Mapping[str, Any]) -> str:
    """One record as its line (keys sorted, so equal records are equal bytes)."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def write_jsonl(path: epath.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Writes records atomically, one JSON object a line; returns how many."""
    lines = [dumps(r) for r in records]
    write_text(path, "".join(lines))
    return len(lines)


def remove(path: epath.PathLike) -> None:
    """Removes a file or a directory tree, local or gs://; nothing there is fine."""
    import shutil

    text = os.fspath(path)
    if not storage.is_remote(text):
        if os.path.isdir(text):
            shutil.rmtree(text, ignore_errors=True)
        elif os.path.lexists(text):
            os.unlink(text)
        return
    fs = storage.filesystem(text)
    with storage.naming(text):
        found = fs.find(text)  # the object itself, or every object under the prefix
        if found:
            fs.rm(found)


# --------------------------------------------------------------------------------------------
# Records as SeqIO sources
# --------------------------------------------------------------------------------------------
# The features of a translation task's source: verified records of the direction's source method,
# every field a string (`correct`: "true", "false" or ""). The MMST loop feeds its own verified
# records to the translation task registered under the name it is configured with.
TRANSLATION_SOURCE_FIELDS = ("problem_id", "dataset", "method", "sample_index", "prompt", "completion", "gold",
                             "correct")


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def as_string_dataset(records: Sequence[Mapping[str, Any]], fields: Sequence[str]):
    """A tf.data dataset of the records' `fields`, one string feature each."""
    import tensorflow as tf

    if not records:
        return tf.data.Dataset.from_tensor_slices({f: tf.constant([], tf.string) for f in fields})
    return tf.data.Dataset.from_tensor_slices({f: [_as_string(r.get(f)) for r in records] for f in fields})


def from_string_features(example: Mapping[str, Any]) -> dict[str, Any]:
    """A SeqIO example's string features (numpy bytes) as a record of str values; `correct` as a
    bool (absent when empty) and `sample_index`/`source_sample_index` as ints."""
    out: dict[str, Any] = {}
    for key, value in example.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif hasattr(value, "dtype"):
            continue  # token ids: not a record field
        out[key] = value
    if "correct" in out:
        correct = out.pop("correct")
        if correct:
            out["correct"] = correct == "true"
    for key in ("sample_index", "source_sample_index"):
        if key in out and isinstance(out[key], str) and out[key].lstrip("-").isdigit():
            out[key] = int(out[key])
    return out
