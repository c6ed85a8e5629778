"""The seccomp allow-list: the only system calls a sandboxed program may make.

Each program installs this filter (``harness.confine``, last, once its privileges are gone). A call
on the list is allowed; any other fails with EPERM; a call through another architecture's
interface (i386's ``int 0x80``, x32's numbers) kills the process. The filter is built with
libseccomp — the library container runtimes use — through ``pyseccomp``, exported as classic BPF
on the host, and installed by the program's process with ``prctl(PR_SET_SECCOMP)``.

The list was derived by tracing (``tests/test_verify_seccomp.py`` lists every system call a
program using each pre-imported module, files in its directory, output, sleeping, randomness and
an extension module import makes, and checks that it is exactly this list). Process creation,
``execve``, sockets, signals to other processes, namespaces, mounts, ``ptrace``, keyrings, BPF,
``io_uring`` and everything else a computation does not need are refused.

Public API:
  - ``ALLOWED``: {name: why a program needs it}; ``IOCTLS``: the ioctl requests allowed.
  - ``build_filter(machine=None) -> bytes``: the filter for ``x86_64`` or ``aarch64`` (default:
    this machine), as the BPF instructions the kernel takes; raises ``AllowListError`` saying what
    is missing when libseccomp or pyseccomp is not there.
  - ``syscall_number(name, machine) -> int | None``: a call's number on an architecture.
"""

from __future__ import annotations

import errno
import platform
import tempfile

ALLOWED = {
    "read": "reading its files, source files of modules it imports",
    "write": "print, its result line, its files",
    "openat": "open(): its files, modules it imports",
    "close": "closing files",
    "lseek": "open() positions a new file; file.seek",
    "newfstatat": "fstat/stat: open(), the import system's path checks",
    "getdents64": "os.listdir, the import system's directory caches",
    "unlink": "os.remove of its own files",
    "ioctl": "open() asks whether a file is a terminal (TCGETS only)",
    "mmap": "memory: Python's allocator, loading an extension module",
    "munmap": "memory returned",
    "mremap": "memory: growing a large list or bytearray",
    "mprotect": "loading an extension module (relocations)",
    "brk": "memory: the C allocator's heap",
    "getrandom": "random.Random() and os.urandom",
    "clock_nanosleep": "time.sleep",
    "exit_group": "ending the process",
}
IOCTLS = {"TCGETS": 0x5401}  # the same number on x86-64 and aarch64
# Calls some architectures lack, and the call their C library makes instead.
EQUIVALENTS = {"unlink": "unlinkat"}
MACHINES = ("x86_64", "aarch64")
DENIED_ERRNO = errno.EPERM
INSTALL_HINT = ("pip install pyseccomp==0.1.2 (in requirements.txt), with the system's libseccomp2 "
                "(Debian and Ubuntu ship it with the base system; else apt-get install libseccomp2)")


class AllowListError(OSError):
    """The filter cannot be built here."""


def _pyseccomp():
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as e:  # RuntimeError: pyseccomp found no libseccomp
        raise AllowListError(errno.ENOSYS, f"seccomp allow-list needs libseccomp: {e}; {INSTALL_HINT}") from e
    return pyseccomp


def _arch(pyseccomp, machine: str) -> int:
    arches = {"x86_64": pyseccomp.Arch.X86_64, "aarch64": pyseccomp.Arch.AARCH64}
    if machine not in arches:
        raise AllowListError(errno.ENOSYS, f"no seccomp allow-list for the {machine} architecture "
                                           f"(only {', '.join(MACHINES)})")
    return arches[machine]


def syscall_number(name: str, machine: str) -> int | None:
    """The number of a system call on an architecture, or None when it has no such call."""
    pyseccomp = _pyseccomp()
    number = pyseccomp.resolve_syscall(_arch(pyseccomp, machine), name)
    return number if number >= 0 else None


def allowed_names(machine: str) -> list[str]:
    """The calls allowed on an architecture: ALLOWED, a missing one replaced by its equivalent."""
    names = []
    for name in ALLOWED:
        if syscall_number(name, machine) is None:
            name = EQUIVALENTS.get(name, name)
        if syscall_number(name, machine) is None:
            raise AllowListError(errno.ENOSYS, f"{machine} has no system call {name}")
        names.append(name)
    return names


def build_filter(machine: str | None = None) -> bytes:
    """The allow-list for `machine` as BPF instructions (8 bytes each, native byte order)."""
    machine = machine or platform.machine()
    pyseccomp = _pyseccomp()
    arch = _arch(pyseccomp, machine)
    try:
        f = pyseccomp.SyscallFilter(pyseccomp.ERRNO(DENIED_ERRNO))
        f.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
        f.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # the lane has set no_new_privs already
        if arch != pyseccomp.system_arch():
            f.add_arch(arch)
            f.remove_arch(pyseccomp.Arch.NATIVE)
        for name in allowed_names(machine):  # by name: libseccomp numbers them for `arch`
            if name == "ioctl":
                for request in IOCTLS.values():
                    f.add_rule(pyseccomp.ALLOW, name, pyseccomp.Arg(1, pyseccomp.EQ, request))
            else:
                f.add_rule(pyseccomp.ALLOW, name)
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            program = out.read()
    except OSError as e:
        raise AllowListError(e.errno or errno.EINVAL, f"libseccomp could not build the filter: {e}") from e
    if not program or len(program) % 8:
        raise AllowListError(errno.EINVAL, f"libseccomp exported {len(program)} bytes of BPF")
    return program
