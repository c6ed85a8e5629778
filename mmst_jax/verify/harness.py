"""What runs in a program's own process, forked from the worker: confinement, then the program.

The process is born inside its lane's cgroups and (where available) as PID 1 of its own PID
namespace. Order matters and is fixed: parent-death signal, first in line for the OOM killer, a
new session when there is no PID namespace to hold its children, stdio onto the lane's pipes
(stdin /dev/null, stdout+stderr one capped pipe, fd 3 the result channel), close every other file
descriptor, move into the slot's private directory, set rlimits, drop privileges (another uid, no
capabilities; no new privileges comes from the lane), install the seccomp allow-list
(``allowlist``), and only then compile and run the untrusted code. Nothing here returns: the
process ends with ``os._exit``.

The harness calls ``solution()`` and writes one JSON line on fd 3: ``{"value": V}`` for a plain V
(int, finite float, str, a short list of them, or None), else ``{"rejected": why}``, or
``{"error": text, "kind": k}`` when the program raised.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import math
import os
import resource
import sys
import types

from mmst_jax.verify import isolation

RESULT_FD = 3
_MAX_STR = 1000
_MAX_LIST = 16
_FD_CEILING = 1 << 20
EXIT_SETUP_FAILED = 71


def cpu_limit(limits: dict) -> int:
    """RLIMIT_CPU's soft limit in whole seconds (the hard limit, SIGKILL, is one more)."""
    return max(1, math.ceil(limits["cpu_s"] if limits.get("cpu_s") else limits["timeout_s"]))


def _rlimits(limits: dict, baseline_as: int) -> list[tuple[int, int, int]]:
    cpu = cpu_limit(limits)
    address_space = baseline_as + int(limits["memory_mb"]) * 2**20
    return [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, address_space, address_space),
        (resource.RLIMIT_NPROC, int(limits["max_procs"]), int(limits["max_procs"])),
        (resource.RLIMIT_NOFILE, int(limits["max_open_files"]), int(limits["max_open_files"])),
        (resource.RLIMIT_FSIZE, int(limits["max_file_mb"] * 2**20), int(limits["max_file_mb"] * 2**20)),
    ]


def address_space(proc_fd: int) -> int:
    """The calling process's VmSize in bytes, from the /proc opened before the root moved."""
    fd = os.open("self/status", os.O_RDONLY, dir_fd=proc_fd)
    try:
        text = os.read(fd, 8192).decode()
    finally:
        os.close(fd)
    for line in text.splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError("VmSize not found in /proc status")


def _above_stdio(fd: int) -> int:
    """The same file on a descriptor above 0-3, so the dup2 calls cannot clobber it."""
    return fd if fd > RESULT_FD else fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


def confine(slot: dict, limits: dict, cfg: dict, out_w: int, res_w: int, baseline: int) -> None:
    """Applies every protection to the calling (freshly forked) process; `baseline` is the
    lane's address space at the fork, to which the memory limit is added."""
    isolation.prctl(isolation.PR_SET_PDEATHSIG, 9)
    proc_fd = cfg["proc_fd"]
    fd = os.open("self/oom_score_adj", os.O_WRONLY, dir_fd=proc_fd)
    os.write(fd, b"1000")  # the first to go when its memory cgroup is full, never the lane
    os.close(fd)
    if not cfg["pid_ns"]:  # its own PID namespace already holds everything it starts
        os.setsid()  # (setsid is not free: with autogroups it makes a scheduler group)
    out_w, res_w = _above_stdio(out_w), _above_stdio(res_w)
    null = _above_stdio(os.open("/dev/null", os.O_RDWR))
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, RESULT_FD)
    os.closerange(RESULT_FD + 1, _FD_CEILING)
    os.chdir(slot["dir"])
    for which, soft, hard in _rlimits(limits, baseline):
        resource.setrlimit(which, (soft, hard))
    if cfg["setuid"]:
        _drop_to(slot["uid"])
    elif cfg["drop_caps"]:
        isolation.clear_capabilities()
    sys.argv[:] = ["program"]  # the environment is already empty: the worker starts with none
    if cfg["seccomp"] is not None:  # last: from here on, only the allow-list's system calls
        isolation.install_seccomp(cfg["seccomp"])


def _drop_to(uid: int) -> None:
    """Root only: become `uid`, which clears every capability (the lane already emptied the
    bounding set, so none can come back)."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def lane_rlimits() -> list[tuple[int, int, int]]:
    """Limits that do not depend on the job, set once on the lane and inherited."""
    return [(resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_MEMLOCK, 0, 0),
            (resource.RLIMIT_MSGQUEUE, 0, 0), (resource.RLIMIT_SIGPENDING, 64, 64)]


def _plain(value):
    """{"value": ...} for a plain value, else {"rejected": ...}."""
    t = type(value)
    if value is None or t is int:
        return {"value": value}
    if t is str:
        return {"value": value} if len(value) <= _MAX_STR else {"rejected": f"a string of {len(value)} characters"}
    if t is float:
        return {"value": value} if math.isfinite(value) else {"rejected": f"{value!r} is not a number"}
    if t in (list, tuple) and len(value) <= _MAX_LIST:
        items = [_plain(v) for v in value]
        if all("value" in i and type(i["value"]) in (int, float, str) for i in items):
            return {"value": [i["value"] for i in items]}
        return {"rejected": "solution() returned a list that holds something other than int, float or str"}
    if t is bool:
        return {"rejected": "solution() returned bool, which is not a number"}
    return {"rejected": f"solution() returned {t.__module__}.{t.__qualname__}, not an int, float, str or short list"}


def _describe(exc: BaseException) -> dict:
    kind = "memory" if isinstance(exc, MemoryError) else "exception"
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = type(exc).__name__
    return {"error": text[:300], "kind": kind}


def run_program(code: str, entry: str) -> None:
    """Compiles and runs the program, calls `entry`, writes the result line; never returns."""
    try:
        compiled = compile(code, "<program>", "exec")
        module = types.ModuleType("__program__")  # a real module: dataclasses, pickle and
        module.__builtins__ = builtins            # typing look their classes up in sys.modules
        sys.modules["__program__"] = module
        namespace = module.__dict__
        exec(compiled, namespace)
        fn = namespace.get(entry)
        if not callable(fn):
            message = {"error": f"the program defines no {entry}()", "kind": "exception"}
        else:
            message = _plain(fn())
        line = json.dumps(message, allow_nan=False) + "\n"
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        try:
            line = json.dumps(_describe(exc)) + "\n"
        except BaseException:
            line = '{"error": "unprintable exception", "kind": "exception"}\n'
    data = line.encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(RESULT_FD, data):]
    except OSError:
        pass
    os._exit(0)


def child_main(job: dict, slot: dict, cfg: dict, out_w: int, res_w: int, baseline: int) -> None:
    """Entry point of the forked process; never returns."""
    try:
        confine(slot, job["limits"], cfg, out_w, res_w, baseline)
    except BaseException as exc:
        try:
            os.write(2 if out_w < 0 else out_w, f"sandbox setup failed: {exc}\n".encode())
        finally:
            os._exit(EXIT_SETUP_FAILED)
    run_program(job["code"], job.get("entry", "solution"))
