"""Running untrusted programs: the host side of the sandbox.

Public API:
  - ``Sandbox(workers=None, slots=4, limits=Limits(), isolation="auto")``: starts ``workers``
    warm worker processes (default: one per core), each running up to ``slots`` programs at once.
    ``sandbox.run(programs, limits=None, entry="solution") -> list[ExecResult]`` runs each program
    (Python source defining ``solution()``) in its own confined process and returns the results in
    the programs' order. ``sandbox.protections`` says what is in force. Use it as a context
    manager, or call ``close()``: that kills whatever is still running and removes the cgroups and
    the temporary directory.
  - ``run_programs(programs, limits=None, **sandbox_kwargs) -> list[ExecResult]``: one-shot.

Isolation modes: ``root`` (euid 0: namespaces without a user namespace, programs run under a
per-slot uid with no capabilities), ``userns`` (unprivileged: a user namespace maps the caller to
uid 0 and the programs drop every capability), ``none`` (rlimits only). ``auto`` picks ``root``
or ``userns``; whatever a mode cannot set up is reported in ``protections`` and logged as a
warning — the sandbox degrades loudly rather than failing.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import selectors
import sysconfig
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

from mmst_jax.verify.cgroups import CgroupTree
from mmst_jax.verify.results import ExecResult, Limits, classify

log = logging.getLogger(__name__)

DEFAULT_PREIMPORTS = (
    "math", "cmath", "fractions", "decimal", "itertools", "functools", "collections",
    "statistics", "datetime", "re", "string", "operator", "random", "heapq", "bisect", "json",
    "time", "copy", "typing", "dataclasses", "numbers",
)
SYSTEM_BINDS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
MAX_PROGRAM_BYTES = 256 * 1024
_START_TIMEOUT_S = 60.0
_instances = 0


class SandboxWarning(UserWarning):
    """Some protection could not be put in force."""


@dataclass
class Protections:
    """The protections in force, as the workers report them after setting up."""
    mode: str = "none"
    user_ns: bool = False
    pid_ns: bool = False
    net_ns: bool = False
    mount_ns: bool = False
    ipc_ns: bool = False
    uts_ns: bool = False
    private_root: bool = False
    setuid: bool = False
    caps_dropped: bool = False
    cgroup_pids: bool = False
    cgroup_memory: bool = False
    rlimits: bool = True
    no_new_privs: bool = True
    errors: dict = field(default_factory=dict)

    @property
    def holds_fork_bomb(self) -> bool:
        """Processes are capped: a pids cgroup, or RLIMIT_NPROC under a non-root uid."""
        return self.cgroup_pids or self.setuid

    @property
    def reaps_everything(self) -> bool:
        """Everything a program starts dies with it (its own PID namespace)."""
        return self.pid_ns

    def active(self) -> list[str]:
        return [f.name for f in fields(self) if f.type in ("bool", bool) and getattr(self, f.name)]

    def missing(self) -> list[str]:
        wanted = ["pid_ns", "net_ns", "mount_ns", "ipc_ns", "private_root", "caps_dropped",
                  "cgroup_pids", "cgroup_memory"]
        return [name for name in wanted if not getattr(self, name)]

    def describe(self) -> str:
        text = f"sandbox mode {self.mode}; active: {', '.join(self.active())}"
        if self.missing():
            text += f"; MISSING: {', '.join(self.missing())}"
        if self.errors:
            text += "; why: " + "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        return text


def _python_binds() -> tuple[list[str], list[str]]:
    """(directories to bind, the worker's sys.path): the standard library and site-packages."""
    paths = sysconfig.get_paths()
    wanted = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    project = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
    sys_path = []
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if not entry or not os.path.isdir(entry) or real == project:
            continue
        if any(real == w or real.startswith(w + os.sep) for w in wanted):
            sys_path.append(entry)
    binds = []
    for path in [*SYSTEM_BINDS, *sorted(wanted), *sys_path]:
        if any(path == b or path.startswith(b.rstrip("/") + "/") for b in binds):
            continue
        if os.path.lexists(path):
            binds.append(path)
    return binds, sys_path


class _Worker:
    def __init__(self, index: int, cfg: dict):
        self.index = index
        self.slots = len(cfg["slots"])
        self.err = tempfile.TemporaryFile()
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        boot = ("import sys, types; pkg = types.ModuleType('mmst_jax'); "
                f"pkg.__path__ = [{os.path.join(package_root, 'mmst_jax')!r}]; "
                "sys.modules['mmst_jax'] = pkg; "
                "from mmst_jax.verify import worker; worker.main()")
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", boot], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env={}, cwd="/",
                                     close_fds=True)
        self.stdin, self.stdout = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.outbuf = b""
        self.inbuf = b""
        self.inflight: dict[int, float] = {}
        self.last_report = time.monotonic()
        os.write(self.stdin, (json.dumps(cfg) + "\n").encode())
        self.hello = self._read_hello()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)

    def _read_hello(self) -> dict:
        deadline = time.monotonic() + _START_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(self.stdout, selectors.EVENT_READ)
            while b"\n" not in self.inbuf:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"sandbox worker did not start: {self.stderr_tail()}")
                chunk = os.read(self.stdout, 65536)
                if not chunk:
                    raise RuntimeError(f"sandbox worker exited while starting: {self.stderr_tail()}")
                self.inbuf += chunk
        line, self.inbuf = self.inbuf.split(b"\n", 1)
        return json.loads(line)["hello"]

    def stderr_tail(self) -> str:
        self.err.seek(0)
        return self.err.read()[-2000:].decode("utf-8", "replace").strip() or "(no output)"

    def send(self, message: dict) -> None:
        self.outbuf += (json.dumps(message) + "\n").encode()
        self.inflight[message["id"]] = time.monotonic()
        self.flush()

    def flush(self) -> None:
        while self.outbuf:
            try:
                n = os.write(self.stdin, self.outbuf)
            except BlockingIOError:
                return
            self.outbuf = self.outbuf[n:]

    def reports(self) -> list[dict] | None:
        """Reports now readable; None when the worker has gone away."""
        try:
            chunk = os.read(self.stdout, 1 << 20)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self.inbuf += chunk
        *lines, self.inbuf = self.inbuf.split(b"\n")
        out = [json.loads(line) for line in lines if line.strip()]
        for report in out:
            self.inflight.pop(report["id"], None)
        if out:
            self.last_report = time.monotonic()
        return out

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.err.close()


class Sandbox:
    def __init__(self, workers: int | None = None, slots: int = 4, limits: Limits | None = None,
                 isolation: str = "auto", preimport: Sequence[str] = DEFAULT_PREIMPORTS,
                 tmp_mb: int = 64):
        global _instances
        if isolation not in ("auto", "root", "userns", "none"):
            raise ValueError(f"isolation must be auto, root, userns or none, not {isolation!r}")
        if not 1 <= slots <= 64:
            raise ValueError(f"slots must be between 1 and 64, not {slots}")
        self.limits = limits or Limits()
        self.mode = ("root" if os.geteuid() == 0 else "userns") if isolation == "auto" else isolation
        self.n_workers = workers or os.cpu_count() or 1
        self.slots = slots
        _instances += 1
        tag = f"{_instances}"
        self._uid_base = 1_000_000_000 + (os.getpid() % 1_000_000) * 1024 + (_instances % 4) * 256
        self._root_dir = tempfile.mkdtemp(prefix="mmst-sandbox-")
        self._cgroups = CgroupTree.create(tag) if self.mode != "none" else CgroupTree(
            reasons={"pids": "isolation none", "memory": "isolation none"})
        self._binds, self._sys_path = _python_binds()
        self._preimport = list(preimport)
        self._tmp_mb = tmp_mb
        self.workers: list[_Worker] = []
        self._closed = False
        try:
            for i in range(self.n_workers):
                self.workers.append(self._start_worker(i))
        except BaseException:
            self.close()
            raise
        self.protections = self._merge([w.hello for w in self.workers])
        if self.protections.missing():
            message = f"verifier sandbox degraded: {self.protections.describe()}"
            log.warning(message)
            warnings.warn(message, SandboxWarning, stacklevel=2)

    def _start_worker(self, index: int) -> _Worker:
        slots = []
        for j in range(self.slots):
            name = f"w{index}s{j}"
            dirs = self._cgroups.make_slot(name, self.limits.max_procs,
                                           (self.limits.memory_mb + 64) * 2**20)
            slots.append({"name": name, "uid": self._uid_base + index * self.slots + j,
                          "cgroup_dirs": dirs})
        files = {}
        if self._cgroups.pids:
            files["pids"] = self._cgroups.pids.limit_file()
        if self._cgroups.memory:
            files["memory"] = self._cgroups.memory.limit_file()
            files["memory_events"] = self._cgroups.memory.events_file()
        cfg = {"mode": self.mode, "host_pid": os.getpid(), "root_dir": self._root_dir,
               "binds": self._binds, "sys_path": self._sys_path, "tmp_mb": self._tmp_mb,
               "preimport": self._preimport, "slots": slots, "cgroup_files": files,
               "uid": os.getuid(), "gid": os.getgid()}
        return _Worker(index, cfg)

    def _merge(self, hellos: list[dict]) -> Protections:
        prot = Protections(mode=self.mode)
        for f in fields(Protections):
            if f.name in ("mode", "errors", "rlimits", "no_new_privs"):
                continue
            setattr(prot, f.name, all(bool(h.get(f.name)) for h in hellos))
        for h in hellos:
            prot.errors.update(h.get("errors", {}))
        prot.errors.update({f"cgroup_{k}": v for k, v in self._cgroups.reasons.items()})
        return prot

    def run(self, programs: Sequence[str], limits: Limits | None = None, entry: str = "solution",
            on_result: Callable[[int, ExecResult], None] | None = None) -> list[ExecResult]:
        """Runs every program; results come back in the programs' order."""
        if self._closed:
            raise RuntimeError("the sandbox is closed")
        limits = limits or self.limits
        job_limits = limits.to_dict()
        results: list[ExecResult | None] = [None] * len(programs)
        pending = collections.deque()
        for i, code in enumerate(programs):
            if not isinstance(code, str):
                results[i] = ExecResult("error", None, f"a program must be a str, not {type(code).__name__}")
            elif len(code.encode("utf-8", "replace")) > MAX_PROGRAM_BYTES:
                results[i] = ExecResult("error", None, f"program over {MAX_PROGRAM_BYTES} bytes")
            else:
                pending.append(i)
        left = len(pending)
        watchdog = limits.timeout_s + 30.0
        with selectors.DefaultSelector() as sel:
            while left:
                sel_map = {}
                for w in self.workers:
                    while pending and len(w.inflight) < w.slots:
                        i = pending.popleft()
                        w.send({"id": i, "code": programs[i], "entry": entry, "limits": job_limits})
                    sel_map[w.stdout] = w
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if w.outbuf else 0)
                    sel.register(w.stdout, selectors.EVENT_READ, w)
                    if events & selectors.EVENT_WRITE:
                        sel.register(w.stdin, selectors.EVENT_WRITE, w)
                ready = sel.select(1.0)
                for key in list(sel.get_map().values()):
                    sel.unregister(key.fd)
                for key, mask in ready:
                    w = key.data
                    if mask & selectors.EVENT_WRITE:
                        w.flush()
                        continue
                    got = w.reports()
                    if got is None:
                        left -= self._replace(w, results, pending, "the sandbox worker exited")
                        continue
                    for report in got:
                        i = report["id"]
                        if results[i] is None:
                            results[i] = classify(report)
                            left -= 1
                            if on_result:
                                on_result(i, results[i])
                now = time.monotonic()
                for w in list(self.workers):
                    if w.inflight and now - max(w.last_report, min(w.inflight.values())) > watchdog:
                        left -= self._replace(w, results, pending, "the sandbox worker stopped answering")
        return results  # type: ignore[return-value]

    def _replace(self, w: _Worker, results: list, pending, why: str) -> int:
        """Fails the dead worker's jobs, starts a new worker in its place; returns jobs failed."""
        detail = f"{why}: {w.stderr_tail()}"[:300]
        failed = 0
        for i in w.inflight:
            if results[i] is None:
                results[i] = ExecResult("error", None, detail)
                failed += 1
        w.inflight.clear()
        log.warning("sandbox worker %d replaced: %s", w.index, detail)
        w.proc.kill()
        w.close()
        index = self.workers.index(w)
        self._cgroups.remove_slots(f"w{w.index}s")
        self.workers[index] = self._start_worker(w.index)
        return failed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self.workers:
            w.close()
        self._cgroups.close()
        try:
            os.rmdir(self._root_dir)
        except OSError:
            pass

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def run_programs(programs: Sequence[str], limits: Limits | None = None, entry: str = "solution",
                 **sandbox_kwargs) -> list[ExecResult]:
    """Runs the programs in a fresh sandbox and closes it."""
    with Sandbox(limits=limits, **sandbox_kwargs) as sandbox:
        return sandbox.run(programs, entry=entry)
