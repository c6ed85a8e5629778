"""What runs in a program's own process, forked from the worker: confinement, then the program.

Order matters and is fixed: join the slot's cgroups, new session, stdio onto the worker's pipes
(stdin /dev/null, stdout+stderr one capped pipe, fd 3 the result channel), close every other file
descriptor, move into the slot's private directory, set rlimits, drop privileges (another uid, no
capabilities, no new privileges), empty the environment — and only then compile and run the
untrusted code. Nothing here returns: the process ends with ``os._exit``.

The harness calls ``solution()`` and writes one JSON line on fd 3: ``{"value": V}`` for a plain V
(int, finite float, str, a short list of them, or None), else ``{"rejected": why}``, or
``{"error": text, "kind": k}`` when the program raised.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import resource
import sys

from mmst_jax.verify import isolation

RESULT_FD = 3
_MAX_STR = 1000
_MAX_LIST = 16
_FD_CEILING = 1 << 20
_EXIT_SETUP_FAILED = 71


def _rlimits(limits: dict, baseline_as: int) -> list[tuple[int, int, int]]:
    cpu = max(1, math.ceil(limits["cpu_s"] if limits.get("cpu_s") else limits["timeout_s"]))
    address_space = baseline_as + int(limits["memory_mb"]) * 2**20
    return [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, address_space, address_space),
        (resource.RLIMIT_NPROC, int(limits["max_procs"]), int(limits["max_procs"])),
        (resource.RLIMIT_NOFILE, int(limits["max_open_files"]), int(limits["max_open_files"])),
        (resource.RLIMIT_FSIZE, int(limits["max_file_mb"] * 2**20), int(limits["max_file_mb"] * 2**20)),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
        (resource.RLIMIT_SIGPENDING, 64, 64),
    ]


def _address_space(status_fd: int) -> int:
    """The worker's VmSize in bytes, read from its /proc status (opened before the root moved)."""
    text = os.pread(status_fd, 8192, 0).decode()
    for line in text.splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError("VmSize not found in /proc status")


def confine(slot: dict, limits: dict, cfg: dict, out_w: int, res_w: int) -> None:
    """Applies every protection to the calling (freshly forked) process."""
    isolation.prctl(isolation.PR_SET_PDEATHSIG, 9)
    for path_fd in slot["cgroup_fds"]:
        fd = os.open("cgroup.procs", os.O_WRONLY, dir_fd=path_fd)
        os.write(fd, b"0")
        os.close(fd)
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, RESULT_FD)
    baseline = _address_space(cfg["status_fd"])
    os.closerange(RESULT_FD + 1, _FD_CEILING)
    os.chdir(slot["dir"])
    for which, soft, hard in _rlimits(limits, baseline):
        resource.setrlimit(which, (soft, hard))
    if cfg["setuid"]:
        _drop_to(slot["uid"])
    elif cfg["drop_caps"]:
        isolation.drop_capabilities()
    isolation.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)
    os.environ.clear()
    sys.argv[:] = ["program"]


def _drop_to(uid: int) -> None:
    """Root only: empty the bounding set, then become `uid` (which clears every capability)."""
    for cap in range(64):
        try:
            isolation.prctl(isolation.PR_CAPBSET_DROP, cap)
        except OSError:
            break
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


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
        namespace = {"__name__": "__program__", "__builtins__": builtins}
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


def child_main(job: dict, slot: dict, cfg: dict, out_w: int, res_w: int) -> None:
    """Entry point of the forked process; never returns."""
    try:
        confine(slot, job["limits"], cfg, out_w, res_w)
    except BaseException as exc:
        try:
            os.write(2 if out_w < 0 else out_w, f"sandbox setup failed: {exc}\n".encode())
        finally:
            os._exit(_EXIT_SETUP_FAILED)
    run_program(job["code"], job.get("entry", "solution"))
