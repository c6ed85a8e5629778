"""Linux isolation primitives for the sandbox worker: namespaces, the private file-system view,
capabilities, prctl, installing the seccomp filter. Standard library and ctypes only; runs inside the worker process.

Python 3.11 has no ``os.unshare``/``os.setns``, so they are called through libc. Everything here
raises ``OSError`` naming the call that failed; the worker decides what to degrade.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
# statvfs f_flag bits -> mount flags that a bind remount inside a user namespace must keep.
_ST_TO_MS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME,
             2048: MS_NODIRATIME, 4096: MS_RELATIME}

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {  # (pivot_root, capset)
    "x86_64": (155, 126),
    "aarch64": (41, 91),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _syscall_number(index: int, name: str) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(errno.ENOSYS, f"{name}: unsupported architecture {platform.machine()}")
    return numbers[index]


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
           f"mount({source!r} on {target!r})")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _syscall_number(0, "pivot_root")
    _check(_libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()),
           "pivot_root")


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(option, arg2, 0, 0, 0), f"prctl({option})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_bounding_set() -> None:
    """Empties the capability bounding set: no execve, even as uid 0, can give capabilities back.
    The caller keeps its own effective capabilities."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:  # past the kernel's last capability
                break
            raise OSError(err, f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(err)}")


def clear_capabilities() -> None:
    """Empties the ambient, effective, permitted and inheritable capability sets."""
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    number = _syscall_number(1, "capset")
    _check(_libc.syscall(ctypes.c_long(number), ctypes.byref(header), ctypes.byref(data)),
           "capset")


# ---- seccomp: installing the allow-list (built by libseccomp on the host, allowlist.py) -----
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def filter_program(raw: bytes):
    """A struct sock_fprog over BPF instructions (8 bytes each, as ``allowlist.build_filter``
    exports them), ready for ``install_seccomp``."""
    n = len(raw) // 8
    if n == 0 or n * 8 != len(raw) or n > 4096:
        raise OSError(errno.EINVAL, f"seccomp: {len(raw)} bytes are not a BPF program")
    array = (_SockFilter * n).from_buffer_copy(raw)
    prog = _SockFprog(n, ctypes.cast(array, ctypes.POINTER(_SockFilter)))
    prog._keep = array  # the program points into the array
    return prog


def install_seccomp(prog) -> None:
    """Installs a filter from ``filter_program`` on the calling thread (and what it forks); needs
    PR_SET_NO_NEW_PRIVS first."""
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0),
           "prctl(PR_SET_SECCOMP)")


def _locked_flags(path: str) -> int:
    flags = 0
    f_flag = os.statvfs(path).f_flag
    for st, ms in _ST_TO_MS.items():
        if f_flag & st:
            flags |= ms
    return flags


def bind_readonly(source: str, target: str, *, writable: bool = False, devices: bool = False) -> None:
    """Bind-mounts source on target (which must exist), then remounts it read-only, nosuid and
    (unless ``devices``) nodev, keeping whatever flags the source mount already has."""
    mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | _locked_flags(source)
    if not writable:
        flags |= MS_RDONLY
    if devices:
        flags |= MS_NOEXEC
    else:
        flags |= MS_NODEV
    mount(None, target, None, flags)


def write_id_maps(uid: int, gid: int) -> None:
    """Maps uid/gid 0 of a new user namespace to the given ids outside it."""
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
    except FileNotFoundError:
        pass
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


DEVICES = ("null", "zero", "full", "random", "urandom")


def build_root(new_root: str, binds: list[str], tmp_mb: int) -> None:
    """Turns ``new_root`` (an empty directory) into the sandbox's whole file system and makes it
    the root of the calling process's (private) mount namespace.

    The view holds only: read-only binds of ``binds`` at their own paths (system libraries and the
    Python installation), a few devices, and a size-capped tmpfs at /tmp. No /proc, no /etc, no
    home, data or run directories. Must be called after ``unshare(CLONE_NEWNS)``.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for source in binds:
        target = new_root + source
        if os.path.islink(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.lexists(target):
                os.symlink(os.readlink(source), target)
            continue
        if not os.path.isdir(source):
            continue
        os.makedirs(target, exist_ok=True)
        bind_readonly(source, target)
    os.makedirs(new_root + "/dev", exist_ok=True)
    for name in DEVICES:
        target = f"{new_root}/dev/{name}"
        if os.path.exists(f"/dev/{name}"):
            open(target, "w").close()
            bind_readonly(f"/dev/{name}", target, writable=True, devices=True)
    os.makedirs(new_root + "/tmp", exist_ok=True)
    mount("tmpfs", new_root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={int(tmp_mb)}m,mode=0755")
    os.chdir(new_root)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
