"""The run directory: its layout, atomic writes, per-stage `_SUCCESS` markers, the config check.

    RUN_DIR/config.gin                 the operative configuration (older ones: config.gin.1, ...)
    RUN_DIR/round_NNN/<stage>/         stages: samples verified translated train checkpoint eval
    RUN_DIR/round_NNN/<stage>/_SUCCESS the stage's marker (JSON): a manifest of its files and a digest
    RUN_DIR/report/                    metrics.json, report.html, *.png, tensorboard/

A stage writes every file atomically (temporary name, then rename) and, once all are written, its
`_SUCCESS` marker. The marker lists every file of the stage with its size (and SHA-256, unless the
stage is too big to hash, as checkpoints are), the digest of the stage's inputs (the markers of
the stages it read) and the stage's own digest (its inputs and the content of its files, leaving
out run-to-run noise such as the verifier's timings). A stage counts as done only if its marker is there, every listed file matches
it, and its inputs' digest is what it was: a file damaged or removed afterwards is detected and the
stage redone; since every stage is deterministic, redoing it reproduces the same files and the
stages after it stay valid (their input digest still matches).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Mapping

from etils import epath

from mmst_jax import storage
from mmst_jax.records import read_jsonl, write_json, write_text

log = logging.getLogger(__name__)

MARKER = "_SUCCESS"
CONFIG_FILE = "config.gin"
STAGES = ("samples", "verified", "translated", "train", "checkpoint", "eval")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says what to do."""


class ConfigMismatchError(RunDirError):
    """The run directory holds a run of another configuration."""


def tokenizer_path(run_dir: "RunDir | epath.PathLike") -> epath.Path:
    """The run's tokenizer: round 0's, used by every round (and by the tasks, to fit prompts)."""
    path = run_dir.path if isinstance(run_dir, RunDir) else epath.Path(run_dir)
    return path / "round_000" / "checkpoint" / "tokenizer.json"


def model_path(checkpoint_dir: epath.PathLike) -> str:
    """Where a checkpoint stage's model lives: `model/` (orbax) or the directory `model.json` names
    (an HF checkpoint the run starts from, or the previous round's model when a round trained on
    nothing)."""
    checkpoint_dir = epath.Path(checkpoint_dir)
    ref = checkpoint_dir / "model.json"
    if ref.exists():
        return json.loads(ref.read_text())["path"]
    return os.fspath(checkpoint_dir / "model")


def _sha256(path: epath.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: epath.Path) -> list[str]:
    """Relative names of the files under a directory (local or gs://), except the marker and
    hidden (temporary or work) files and directories."""
    return [rel for rel in storage.files_under(directory) if rel != MARKER]


# --------------------------------------------------------------------------------------------
# Stage markers
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StageState:
    """What a stage directory holds: `done` (with its marker), or why not (`reason`)."""

    done: bool
    marker: dict | None
    reason: str  # "done" | "missing" | "corrupt: ..." | "stale: ..."

    @property
    def digest(self) -> str | None:
        return self.marker["digest"] if self.marker else None


def mark_done(directory: epath.PathLike, inputs: str, info: Mapping[str, Any] | None = None,
              hash_contents: bool = True) -> dict:
    """Writes the `_SUCCESS` marker of a finished stage: its files (size, SHA-256), the digest of
    its inputs, and `info` (counts, for the report). Returns the marker."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for rel in _files(directory):
        p = directory / rel
        entry = {"size": p.stat().length}
        if hash_contents:
            entry["sha256"] = _sha256(p)
        files[rel] = entry
    body = {"inputs": inputs, "files": files, "info": dict(info or {})}
    marker = {**body, "digest": _digest(directory, body, hash_contents), "checksum": _checksum(body)}
    write_json(directory / MARKER, marker)
    return marker


def _checksum(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _digest(directory: epath.Path, body: Mapping[str, Any], hash_contents: bool) -> str:
    """What the stages after this one were made from: its inputs, info and the content of its
    files, with the fields that vary from run to run (VOLATILE_FIELDS, e.g. verifier timings) left
    out, so that a stage redone with the same results keeps the same digest."""
    content = {rel: (_content_hash(directory / rel) if hash_contents else entry["size"])
               for rel, entry in body["files"].items()}
    return hashlib.sha256(json.dumps({"inputs": body["inputs"], "info": body["info"], "content": content},
                                     sort_keys=True).encode()).hexdigest()


VOLATILE_FIELDS = ("elapsed_ms",)


def _content_hash(path: epath.Path) -> str:
    if not path.name.endswith(".jsonl"):
        return _sha256(path)
    h = hashlib.sha256()
    for record in read_jsonl(path):
        for field in VOLATILE_FIELDS:
            record.pop(field, None)
        h.update(json.dumps(record, sort_keys=True).encode() + b"\n")
    return h.hexdigest()


def stage_state(directory: epath.PathLike, inputs: str | None = None) -> StageState:
    """Whether a stage is done: its marker reads, every listed file is intact, and (when `inputs`
    is given) it was made from those inputs."""
    directory = epath.Path(directory)
    marker_path = directory / MARKER
    if not marker_path.exists():
        return StageState(False, None, "missing")
    try:
        marker = json.loads(marker_path.read_text())
        files, checksum = marker["files"], marker["checksum"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return StageState(False, None, f"corrupt: unreadable marker ({e})")
    body = {k: marker.get(k) for k in ("inputs", "files", "info")}
    if _checksum(body) != checksum or not isinstance(marker.get("digest"), str):
        return StageState(False, None, "corrupt: the marker does not match its checksum")
    for rel, entry in files.items():
        p = directory / rel
        if not p.exists():
            return StageState(False, marker, f"corrupt: {rel} is missing")
        if p.stat().length != entry["size"]:
            return StageState(False, marker, f"corrupt: {rel} has {p.stat().length} bytes, not {entry['size']}")
        if "sha256" in entry and _sha256(p) != entry["sha256"]:
            return StageState(False, marker, f"corrupt: {rel} does not match its checksum")
    if inputs is not None and marker["inputs"] != inputs:
        return StageState(False, marker, "stale: made from other inputs")
    return StageState(True, marker, "done")


def combine(*digests: str | None) -> str:
    """The digest of several inputs (None stands for no input)."""
    return hashlib.sha256("|".join(d or "-" for d in digests).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------------
class RunDir:
    """Paths of one run (local or gs://) and its configuration check."""

    def __init__(self, path: epath.PathLike):
        text = os.fspath(path)
        # Local paths are made absolute (orbax needs absolute checkpoint paths); gs:// stays as is.
        self.path = epath.Path(text if "://" in text else os.path.abspath(text))

    def __repr__(self) -> str:
        return f"RunDir({os.fspath(self.path)!r})"

    def round(self, n: int) -> epath.Path:
        return self.path / f"round_{n:03d}"

    def stage(self, n: int, stage: str) -> epath.Path:
        if stage not in STAGES:
            raise RunDirError(f"unknown stage {stage!r}; stages are {STAGES}")
        return self.round(n) / stage

    @property
    def report(self) -> epath.Path:
        return self.path / "report"

    @property
    def config_path(self) -> epath.Path:
        return self.path / CONFIG_FILE

    def rounds(self) -> list[int]:
        """Round numbers present (any stage started)."""
        if not self.path.exists():
            return []
        out = []
        for p in self.path.iterdir():
            if p.name.startswith("round_") and p.name[6:].isdigit():
                out.append(int(p.name[6:]))
        return sorted(out)

    def check_config(self, config_text: str, allow_change: bool = False) -> str:
        """Saves the configuration on a first run; on a later one, refuses a different one unless
        `allow_change` (the old file is kept as config.gin.N). Returns "new", "same" or "changed".
        A gs:// run directory's bucket must exist (StorageError otherwise, before anything is written)."""
        storage.check_bucket(self.path)
        if not storage.is_remote(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            write_text(self.config_path, config_text)
            return "new"
        saved = self.config_path.read_text()
        difference = first_difference(saved, config_text)
        if difference is None:
            return "same"
        if not allow_change:
            raise ConfigMismatchError(
                f"{self.path} holds a run of another configuration ({difference}). Use another run "
                "directory (--gin.RUN_DIR=\"'DIR'\"), or pass --allow_config_change to continue this "
                "run with the new configuration (finished stages are kept)")
        n = 1
        while (self.path / f"{CONFIG_FILE}.{n}").exists():
            n += 1
        write_text(self.path / f"{CONFIG_FILE}.{n}", saved)
        write_text(self.config_path, config_text)
        log.warning("%s: configuration changed (%s); the old one is kept as %s.%d", self.path, difference,
                    CONFIG_FILE, n)
        return "changed"


# Bindings that do not define a run: where it lives, and the study it belongs to (mmst study).
NOT_OF_THE_RUN = ("RUN_DIR", "STUDY_DIR", "STUDY_SEEDS")
NOT_OF_THE_RUN_PREFIXES = ("study.", "mmst.study.")


def _significant(text: str) -> list[str]:
    """The configuration's statements that define the run: no comments or blank lines, no RUN_DIR
    and no study settings (NOT_OF_THE_RUN); a statement's indented continuation lines are its own."""
    statements: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1].isspace() and statements:
            statements[-1].append(stripped)
        else:
            statements.append([stripped])
    out = []
    for statement in statements:
        name = statement[0].split("=", 1)[0].strip()
        if name in NOT_OF_THE_RUN or name.startswith(NOT_OF_THE_RUN_PREFIXES):
            continue
        out.append(" ".join(statement))
    return out


def first_difference(saved: str, new: str) -> str | None:
    """None if two configurations define the same run, else the first difference, in words."""
    a, b = _significant(saved), _significant(new)
    if a == b:
        return None
    for x, y in zip(a, b):
        if x != y:
            return f"saved: {x!r}, now: {y!r}"
    if len(a) > len(b):
        return f"saved has {a[len(b)]!r}, now absent"
    return f"now has {b[len(a)]!r}, absent from the saved one"
