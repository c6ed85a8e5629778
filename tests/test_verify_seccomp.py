"""The seccomp allow-list: derived by tracing what legit programs call, built by libseccomp for
x86-64 and aarch64, and holding in the real sandbox (allowed calls work, anything else is EPERM,
another architecture's calls kill the process)."""

import ctypes
import importlib
import json
import os
import platform
import select
import struct
import subprocess
import sys

import pyseccomp  # required (requirements.txt): a machine without it fails here
import pytest

from mmst_jax.verify import allowlist, harness
from mmst_jax.verify.sandbox import DEFAULT_PREIMPORTS, Sandbox

MACHINE = platform.machine()

# A program using every pre-imported module, its own files, output, sleeping and memory growth.
EVERY_MODULE = '''
import bisect, cmath, collections, copy, dataclasses, datetime, decimal, fractions, functools, heapq
import itertools, json, math, numbers, operator, os, random, re, statistics, string, time, typing


@dataclasses.dataclass
class Item:
    price: fractions.Fraction
    count: int


def solution():
    items = [Item(fractions.Fraction(3, 4), 4), Item(fractions.Fraction(5, 2), 2)]
    total = sum((i.price * i.count for i in items), fractions.Fraction(0))
    assert isinstance(total, numbers.Rational) and typing.get_type_hints(Item)["count"] is int
    cost = decimal.Decimal("1.10") * 3
    root = abs(cmath.sqrt(-4))
    pairs = len(list(itertools.permutations(range(4), 2)))
    product = functools.reduce(operator.mul, range(1, 6))
    counts = collections.Counter("mississippi")
    mean = statistics.mean([1, 2, 3, 4])
    days = (datetime.date(2024, 3, 1) - datetime.date(2024, 2, 1)).days
    words = re.findall(r"\\w+", "one two three")
    letter = string.ascii_lowercase.index("e")
    die = random.Random(7).randint(1, 6)
    heap = [5, 1, 3]
    heapq.heapify(heap)
    position = bisect.bisect_left([1, 3, 5], 4)
    blob = copy.deepcopy(json.loads(json.dumps({"x": [1, 2]})))
    start = time.perf_counter()
    time.sleep(0.001)
    assert time.perf_counter() > start and time.time() > 0
    big = list(range(300000))
    big.extend(range(300000))
    grown = bytearray(8 * 2**20)
    grown += bytearray(8 * 2**20)
    with open("scratch.txt", "w") as f:
        f.write("12\\n")
    with open("scratch.txt") as f:
        twelve = int(f.read())
    assert os.listdir(".") == ["scratch.txt"]
    os.remove("scratch.txt")
    print("working", len(big), len(grown), cost, root, words, die, heap[0], position, blob)
    return int(total) + twelve + pairs + product + counts["s"] + int(mean) + days + letter
'''
EVERY_MODULE_VALUE = 8 + 12 + 12 + 120 + 4 + 2 + 29 + 4
# A program importing modules that are not pre-imported, a C extension (_zoneinfo) among them,
# and drawing fresh randomness.
IMPORTS = '''
import array, bz2, calendar, random, sys, zoneinfo


def solution():
    assert zoneinfo.ZoneInfo.__module__ == "zoneinfo"
    numbers = array.array("i", range(10))
    data = bz2.decompress(bz2.compress(b"x" * 1000))
    assert 0 <= random.Random().random() < 1 and 0 <= random.SystemRandom().random() < 1
    sys.stderr.write("a note\\n")
    return sum(numbers) + len(data) + calendar.monthrange(2024, 2)[1]
'''
IMPORTS_VALUE = 45 + 1000 + 29
LEGIT = [(EVERY_MODULE, EVERY_MODULE_VALUE), (IMPORTS, IMPORTS_VALUE)]
# What no computation needs; each is refused with EPERM.
REFUSED = ["clone", "clone3", "execve", "execveat", "socket", "connect", "kill", "tgkill", "ptrace",
           "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf", "perf_event_open",
           "keyctl", "add_key", "io_uring_setup", "userfaultfd", "process_vm_readv", "init_module",
           "open_by_handle_at", "setuid", "prctl", "seccomp", "rt_sigaction", "getpid", "mkdirat",
           "shmget", "memfd_create", "personality", "syslog", "reboot"]


# ---- tracing: every system call a piece of code makes ----------------------------------
_NOTIF_RECV, _NOTIF_SEND, _CONTINUE = 0xC0502100, 0xC0182101, 1  # <linux/seccomp.h>
_PIDFD_GETFD = 438  # the same on x86-64 and aarch64


class _Data(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int), ("arch", ctypes.c_uint32), ("ip", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6)]


class _Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("data", _Data)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _listener(pid):
    """The traced child's seccomp listener, copied into this process."""
    pidfd = os.pidfd_open(pid)
    try:
        for _ in range(100000):
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if "seccomp notify" in os.readlink(f"/proc/{pid}/fd/{name}"):
                        fd = _libc.syscall(ctypes.c_long(_PIDFD_GETFD), pidfd, int(name), 0)
                        assert fd >= 0, os.strerror(ctypes.get_errno())
                        return fd
                except FileNotFoundError:
                    pass
        raise AssertionError("the traced child has no seccomp listener")
    finally:
        os.close(pidfd)


def trace(setup, run):
    """[(name, args)] of every system call `run()` makes in a forked child, after `setup()`: the
    child's filter notifies this process of each call, which records it and lets it continue."""
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_r)
            setup()
            listener = pyseccomp.SyscallFilter(pyseccomp.NOTIFY)
            os.write(go_w, b"x")
            listener.load()
            run()
        finally:
            os._exit(70)
    os.close(go_w)
    assert os.read(go_r, 1) == b"x"
    os.close(go_r)
    fd, pidfd = _listener(pid), os.pidfd_open(pid)
    calls = []
    try:
        while True:
            ready, _, _ = select.select([fd, pidfd], [], [], 60)
            assert ready, "the traced child hung"
            if fd not in ready:
                break
            notif = _Notif()
            if _libc.ioctl(fd, ctypes.c_ulong(_NOTIF_RECV), ctypes.byref(notif)) != 0:
                if pidfd in ready:
                    break
                continue
            name = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, notif.data.nr).decode()
            calls.append((name, tuple(notif.data.args)))
            _libc.ioctl(fd, ctypes.c_ulong(_NOTIF_SEND), ctypes.byref(_Resp(notif.id, 0, 0, _CONTINUE)))
    finally:
        os.close(fd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    return calls


def _program_calls(code, tmp_path):
    """The system calls the harness and `code` make from the moment the allow-list would be
    installed: compile, run solution(), write the result line, exit."""
    for name in DEFAULT_PREIMPORTS:  # as in the worker
        importlib.import_module(name)
    result = tmp_path / "result"
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)

    def setup():
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(result, os.O_WRONLY | os.O_CREAT), harness.RESULT_FD)
        os.chdir(workdir)

    calls = trace(setup, lambda: harness.run_program(code, "solution"))
    os.close(out)
    return calls, result.read_text()


@pytest.mark.skipif(MACHINE not in allowlist.MACHINES, reason=f"no allow-list for {MACHINE}")
def test_legit_programs_make_exactly_the_allowed_calls(tmp_path):
    if "_zoneinfo" in sys.modules:
        # An earlier test of this process imported it, and the traced programs are forks of this
        # process: trace in a fresh interpreter, where IMPORTS really loads an extension module.
        assert not os.environ.get("MMST_FRESH_TRACE"), "_zoneinfo is imported at start-up"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"{__file__}::test_legit_programs_make_exactly_the_allowed_calls"],
                              env={**os.environ, "MMST_FRESH_TRACE": "1"}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return
    made, ioctls = set(), set()
    for i, (code, value) in enumerate(LEGIT):
        calls, result = _program_calls(code, tmp_path / str(i))
        assert result == f'{{"value": {value}}}\n'
        made |= {name for name, _ in calls}
        ioctls |= {args[1] for name, args in calls if name == "ioctl"}
    assert made == set(allowlist.allowed_names(MACHINE))
    assert ioctls == set(allowlist.IOCTLS.values())


# ---- the filter libseccomp builds, run by a classic BPF interpreter --------------------
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_ALLOW, _KILL_PROCESS, _EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1


def run_bpf(program: bytes, nr: int, arch: int, args=(0,) * 6) -> int:
    """The action a seccomp filter returns for one call (struct seccomp_data as the kernel
    fills it). Only the instructions a seccomp filter uses; any other fails the test."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    ins = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    a = x = pc = 0
    mem = [0] * 16
    while True:
        code, jt, jf, k = ins[pc]
        pc += 1
        if code == 0x20:                       # ld [k]
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x00:                     # ld #k
            a = k
        elif code == 0x60:                     # ld M[k]
            a = mem[k]
        elif code == 0x02:                     # st M[k]
            mem[k] = a
        elif code == 0x07:                     # tax
            x = a
        elif code == 0x87:                     # txa
            a = x
        elif code == 0x54:                     # and #k
            a &= k
        elif code == 0x05:                     # ja
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:                     # ret #k
            return k
        else:
            raise AssertionError(f"BPF instruction {code:#x} not interpreted")


@pytest.mark.parametrize("machine", allowlist.MACHINES)
def test_the_filter_allows_the_list_and_refuses_the_rest(machine):
    program = allowlist.build_filter(machine)
    arch = _AUDIT_ARCH[machine]
    number = lambda name: allowlist.syscall_number(name, machine)  # noqa: E731
    for name in allowlist.allowed_names(machine):
        args = (0, allowlist.IOCTLS["TCGETS"], 0, 0, 0, 0) if name == "ioctl" else (0,) * 6
        assert run_bpf(program, number(name), arch, args) == _ALLOW, name
    assert run_bpf(program, number("ioctl"), arch, (0, 0x5412, 0, 0, 0, 0)) == _EPERM  # TIOCSTI
    refused = [name for name in REFUSED if number(name) is not None]
    assert len(refused) >= 30
    for name in refused:
        assert run_bpf(program, number(name), arch) == _EPERM, name
    for nr in range(0, 600):  # nothing but the list passes
        if nr not in {number(name) for name in allowlist.allowed_names(machine)}:
            assert run_bpf(program, nr, arch) != _ALLOW, nr
    other = _AUDIT_ARCH["aarch64" if machine == "x86_64" else "x86_64"]
    assert run_bpf(program, number("read"), other) == _KILL_PROCESS
    assert run_bpf(program, number("read"), 0x40000003) == _KILL_PROCESS  # i386
    if machine == "x86_64":  # x32's numbers
        assert run_bpf(program, number("read") | 0x40000000, arch) == _KILL_PROCESS


# ---- in the real sandbox -------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(lanes=2) as box:  # UnprotectedSandboxError without every protection
        yield box


def test_the_sandbox_runs_the_legit_programs(sandbox):
    assert sandbox.protections.seccomp, sandbox.protections.describe()
    results = sandbox.run([code for code, _ in LEGIT])
    assert [(r.status, r.value) for r in results] == [("ok", value) for _, value in LEGIT], results


def test_anything_else_is_refused_and_other_abis_are_killed(sandbox):
    numbers = {name: allowlist.syscall_number(name, MACHINE) for name in REFUSED}
    probe = ("import ctypes, json\nlibc = ctypes.CDLL(None, use_errno=True)\ndef solution():\n    out = []\n"
             f"    for nr in {sorted(n for n in numbers.values() if n is not None)}:\n"
             "        ctypes.set_errno(0)\n        ret = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
             "        out.append(ctypes.get_errno() if ret == -1 else 1000 + ret)\n    return json.dumps(out)\n")
    [result] = sandbox.run([probe])
    assert result.status == "ok", result
    errnos = json.loads(result.value)
    assert errnos == [1] * len(errnos) and len(errnos) >= 30
    x32 = "import ctypes\ndef solution():\n    return ctypes.CDLL(None).syscall(0x40000000 | 39)\n"
    results = sandbox.run([x32] if MACHINE == "x86_64" else [])
    assert all(r.status == "error" and "SIGSYS" in r.detail for r in results), results
