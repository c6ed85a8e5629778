"""Limits of one program run, its result, and the host-side reading of what the worker reports.

The result a program passes back is one JSON line of at most ``RESULT_MAX_BYTES`` bytes, parsed
here with the standard JSON parser into plain data: nothing of the program's is ever unpickled or
called on the host. A value is accepted only if it is an int (not bool), a finite float, a string
of at most ``MAX_STR_CHARS`` characters, or a list of at most ``MAX_LIST_ITEMS`` of those; anything
else is ``rejected``.

A program can write that line itself instead of returning; it then passes back a value it could
equally have returned, and the gold answer never enters the sandbox, so nothing is gained.

Statuses (docs/architecture.md): ``ok``, ``no_answer`` (``solution()`` returned None), ``error``, ``timeout``
(wall clock or CPU time), ``memory``, ``output_limit`` (stdout+stderr over the cap), ``rejected``.
"""

from __future__ import annotations

import json
import math
import signal
from dataclasses import asdict, dataclass
from typing import Any

RESULT_MAX_BYTES = 16384
MAX_STR_CHARS = 1000
MAX_LIST_ITEMS = 16
STATUSES = ("ok", "no_answer", "error", "timeout", "memory", "output_limit", "rejected")


@dataclass(frozen=True)
class Limits:
    """What one program may use. Memory is counted above the worker's own baseline."""
    timeout_s: float = 2.0          # wall clock, from fork to exit
    cpu_s: float | None = None      # CPU seconds (RLIMIT_CPU); None: ceil(timeout_s)
    memory_mb: int = 256            # address space above the baseline; memory cgroup cap
    max_procs: int = 16             # processes + threads (pids cgroup; RLIMIT_NPROC)
    max_open_files: int = 32        # RLIMIT_NOFILE
    max_file_mb: float = 4.0        # RLIMIT_FSIZE, the largest file it may write
    max_output_bytes: int = 65536   # stdout + stderr together

    def __post_init__(self):
        if self.timeout_s <= 0 or self.memory_mb < 16 or self.max_procs < 1:
            raise ValueError(f"limits out of range: {self}")

    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExecResult:
    status: str
    value: Any = None          # a plain value (int, float, str, list of them) when status is ok
    detail: str = ""
    elapsed_ms: float = 0.0
    output_bytes: int = 0


class _Rejected(ValueError):
    pass


def _reject_constant(name: str):
    raise _Rejected(f"{name} is not a number")


def check_value(value: Any, depth: int = 0) -> Any:
    """Returns the value if it is plain, else raises ValueError saying why."""
    t = type(value)
    if t is int:
        return value
    if t is float:
        if not math.isfinite(value):
            raise _Rejected(f"{value!r} is not a number")
        return value
    if t is str:
        if len(value) > MAX_STR_CHARS:
            raise _Rejected(f"a string of {len(value)} characters (at most {MAX_STR_CHARS})")
        return value
    if t is list and depth == 0:
        if len(value) > MAX_LIST_ITEMS:
            raise _Rejected(f"a list of {len(value)} items (at most {MAX_LIST_ITEMS})")
        return [check_value(v, 1) for v in value]
    raise _Rejected(f"a {t.__name__} is not a plain value" if t is not bool else "bool is not a number")


def parse_result_line(raw: bytes) -> dict:
    """Parses the program's result channel into {'value': v} | {'error': s, 'kind': k} |
    {'rejected': s}; never raises."""
    if len(raw) > RESULT_MAX_BYTES:
        return {"rejected": f"result over {RESULT_MAX_BYTES} bytes"}
    if raw.count(b"\n") != 1 or not raw.endswith(b"\n"):
        return {"rejected": "the result channel must carry exactly one line"}
    try:
        msg = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except _Rejected as e:
        return {"rejected": str(e)}
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return {"rejected": f"malformed result: {str(e)[:80]}"}
    if not isinstance(msg, dict) or len(msg) > 2:
        return {"rejected": "malformed result"}
    if set(msg) == {"value"}:
        if msg["value"] is None:
            return {"value": None}
        try:
            return {"value": check_value(msg["value"])}
        except _Rejected as e:
            return {"rejected": f"solution() returned {e}"}
    if set(msg) == {"error", "kind"} and isinstance(msg["error"], str):
        return {"error": msg["error"][:300], "kind": str(msg["kind"])[:20]}
    if set(msg) == {"rejected"} and isinstance(msg["rejected"], str):
        return {"rejected": msg["rejected"][:300]}
    return {"rejected": "malformed result"}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(report: dict) -> ExecResult:
    """Turns a worker's report on one program into an ExecResult.

    The report carries: ``killed`` (None, "timeout", "output", "result"), ``signal`` or ``exit``
    (how the program's first process ended), ``cpu_s`` (its CPU time), ``cpu_limit``, ``oom``
    (the memory group killed something), ``result`` (the raw result channel, latin-1 decoded),
    ``elapsed_ms`` and ``output_bytes``.
    """
    elapsed = float(report.get("elapsed_ms", 0.0))
    out = int(report.get("output_bytes", 0))
    make = lambda status, detail="", value=None: ExecResult(status, value, detail, elapsed, out)  # noqa: E731
    if report.get("failed"):
        return make("error", f"sandbox: {report['failed']}"[:300])
    killed = report.get("killed")
    sig = report.get("signal")
    if killed == "timeout":
        return make("timeout", f"wall clock over {report.get('timeout_s')} s")
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and
                                 report.get("cpu_s", 0) >= report.get("cpu_limit", math.inf)):
        return make("timeout", f"CPU time over {report.get('cpu_limit')} s")
    if killed == "output":
        return make("output_limit", f"stdout+stderr over {report.get('output_cap')} bytes")
    if killed == "result":
        return make("rejected", f"result over {RESULT_MAX_BYTES} bytes")
    if report.get("oom"):
        return make("memory", "killed by the memory cgroup")
    raw = report.get("result")
    if raw:
        msg = parse_result_line(raw.encode("latin-1"))
        if "value" in msg:
            if msg["value"] is None:
                return make("no_answer", "solution() returned None")
            return make("ok", "", msg["value"])
        if "rejected" in msg:
            return make("rejected", msg["rejected"])
        status = "memory" if msg["kind"] == "memory" else "error"
        return make(status, msg["error"])
    if sig is not None:
        return make("error", f"killed by {_signal_name(sig)} before returning a result")
    return make("error", f"exited with status {report.get('exit')} before returning a result")
