"""Host-side control groups for the sandbox: a pids group and a memory group per slot.

A pids group is what holds a fork bomb when everything runs as root (RLIMIT_NPROC is not enforced
for root); a memory group caps what a program and its children really use. Both cgroup v1 (separate
``pids`` and ``memory`` hierarchies) and v2 (one unified hierarchy with the controllers enabled)
are handled. Groups are made below the calling process's own group when that is writable, else
below the hierarchy's root; ``CgroupTree.close()`` kills whatever is left in them and removes them.

Nothing here is required: ``CgroupTree.create`` returns a tree whose ``pids``/``memory`` are None
with a ``reasons`` entry saying why when a controller is not available or not writable.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

_PREFIX = "mmst-verify-"


def _mounts() -> list[tuple[str, str, list[str]]]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4:
                out.append((parts[1], parts[2], parts[3].split(",")))
    return out


def _own_path(controller: str | None) -> str:
    """This process's group path in the v1 hierarchy of `controller` (None: the v2 hierarchy)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller is None and names == "":
                return path
            if controller is not None and controller in names.split(","):
                return path
    return "/"


@dataclass
class Controller:
    """One controller's base directory for this sandbox, and how to set its limits."""
    name: str          # "pids" or "memory"
    version: int       # 1 or 2
    base: str          # the sandbox's own group directory

    def limit_file(self) -> str:
        if self.name == "pids":
            return "pids.max"
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    def events_file(self) -> str:
        """The file with the `oom_kill N` counter."""
        return "memory.oom_control" if self.version == 1 else "memory.events"


@dataclass
class CgroupTree:
    pids: Controller | None = None
    memory: Controller | None = None
    reasons: dict = field(default_factory=dict)
    slot_dirs: list = field(default_factory=list)

    @classmethod
    def create(cls, tag: str) -> "CgroupTree":
        tree = cls()
        mounts = _mounts()
        for name in ("pids", "memory"):
            try:
                setattr(tree, name, _make_base(name, tag, mounts))
            except OSError as e:
                tree.reasons[name] = str(e)
        return tree

    def make_slot(self, slot: str, pids_max: int, memory_bytes: int) -> dict:
        """Creates the slot's groups with their limits; returns {controller: directory}."""
        dirs = {}
        for ctl, value in ((self.pids, pids_max), (self.memory, memory_bytes)):
            if ctl is None:
                continue
            path = os.path.join(ctl.base, slot)
            os.mkdir(path)
            self.slot_dirs.append(path)
            write_limit(path, ctl, value)
            dirs[ctl.name] = path
        return dirs

    def remove_slots(self, prefix: str) -> None:
        """Kills the tasks in, and removes, the slot groups whose names start with prefix."""
        for path in [p for p in self.slot_dirs if os.path.basename(p).startswith(prefix)]:
            kill_and_remove(path)
            self.slot_dirs.remove(path)

    def close(self) -> None:
        """Kills every task left in the sandbox's groups and removes them."""
        for path in reversed(self.slot_dirs):
            kill_and_remove(path)
        self.slot_dirs = []
        for ctl in (self.pids, self.memory):
            if ctl is not None:
                kill_and_remove(ctl.base)


def write_limit(path: str, ctl: Controller, value: int) -> None:
    with open(os.path.join(path, ctl.limit_file()), "w") as f:
        f.write(str(int(value)))
    if ctl.name == "memory" and ctl.version == 1:
        memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            with open(memsw, "w") as f:
                f.write(str(int(value)))
    if ctl.name == "memory" and ctl.version == 2:
        swap = os.path.join(path, "memory.swap.max")
        if os.path.exists(swap):
            with open(swap, "w") as f:
                f.write("0")


def _make_base(name: str, tag: str, mounts) -> Controller:
    v1 = [m for m in mounts if m[1] == "cgroup" and name in m[2]]
    v2 = [m for m in mounts if m[1] == "cgroup2"]
    errors = []
    if v1:
        root = v1[0][0]
        own = os.path.join(root, _own_path(name).lstrip("/"))
        for parent in dict.fromkeys([own, root]):
            try:
                base = _mkdir_group(parent, tag)
                ctl = Controller(name, 1, base)
                if name == "memory":
                    _write_optional(base, "memory.use_hierarchy", "1")
                return ctl
            except OSError as e:
                errors.append(f"{parent}: {e.strerror or e}")
    for root, _, _ in v2:
        if not os.path.exists(os.path.join(root, "cgroup.controllers")):
            continue
        with open(os.path.join(root, "cgroup.controllers")) as f:
            if name not in f.read().split():
                errors.append(f"{root}: cgroup v2 without the {name} controller")
                continue
        own = os.path.join(root, _own_path(None).lstrip("/"))
        try:
            _enable(own, name)
            base = _mkdir_group(own, tag)
            _enable(base, name)
            return Controller(name, 2, base)
        except OSError as e:
            errors.append(f"{own}: {e.strerror or e}")
    if not v1 and not v2:
        errors.append("no cgroup hierarchy mounted")
    raise OSError(f"cgroup {name} not usable: " + "; ".join(errors))


def _mkdir_group(parent: str, tag: str) -> str:
    _remove_stale(parent)
    path = os.path.join(parent, f"{_PREFIX}{os.getpid()}-{tag}")
    os.mkdir(path)
    return path


def _enable(path: str, name: str) -> None:
    with open(os.path.join(path, "cgroup.subtree_control"), "w") as f:
        f.write(f"+{name}")


def _write_optional(path: str, name: str, value: str) -> None:
    try:
        with open(os.path.join(path, name), "w") as f:
            f.write(value)
    except OSError:
        pass


def _remove_stale(parent: str) -> None:
    """Removes groups left by sandboxes whose process is gone (a host killed with SIGKILL)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        try:
            pid = int(name[len(_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            kill_and_remove(os.path.join(parent, name))
        except (ValueError, OSError):
            continue


def tasks_in(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def kill_and_remove(path: str) -> None:
    if not os.path.isdir(path):
        return
    for sub in os.listdir(path):
        full = os.path.join(path, sub)
        if os.path.isdir(full):
            kill_and_remove(full)
    deadline = time.monotonic() + 5.0
    while True:
        pids = tasks_in(path)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.rmdir(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
