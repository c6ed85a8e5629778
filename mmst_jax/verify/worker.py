"""The sandbox worker: a warm, pre-imported process that sets the sandbox up once and forks lanes.

Started by ``sandbox.Sandbox`` as ``python -I -S`` with an empty environment. It reads its
configuration (one JSON line) on stdin, then once: pre-imports the usual modules, opens its
lanes' cgroup directories and /proc, enters new mount, network, IPC and UTS namespaces (inside a
new user namespace when not root), builds a private root file system (``isolation.build_root``),
disables SysV IPC, checks that per-program PID namespaces work and that the seccomp allow-list
the host built holds, and writes a hello line with the protections actually in force. Then it forks one ``lane.Lane`` per slot — each joins its own
cgroups and serves jobs on its own pair of pipes, handed over by the host — and waits for its
stdin to close, when it stops the lanes and exits.

The worker never runs untrusted code and never sees a gold answer.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import select
import signal
import sys
import time

from mmst_jax.verify import harness, isolation
from mmst_jax.verify.lane import Lane, reap_children, send

_IPC_SYSCTLS = {"shmmni": "0", "msgmni": "0", "sem": "0 0 0 0"}
_NAMESPACES = {"net_ns": isolation.CLONE_NEWNET, "mount_ns": isolation.CLONE_NEWNS,
               "ipc_ns": isolation.CLONE_NEWIPC, "uts_ns": isolation.CLONE_NEWUTS}


def _read_config() -> dict:
    line = b""
    while not line.endswith(b"\n"):  # unbuffered, one byte at a time: nothing else is read
        chunk = os.read(0, 1)
        if not chunk:
            os._exit(1)
        line += chunk
    return json.loads(line)


class Worker:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.prot = {"mode": cfg["mode"], "errors": {}, "user_ns": False, "pid_ns": False,
                     "private_root": False, "setuid": False, "caps_dropped": False,
                     **{k: False for k in _NAMESPACES}}

    def _error(self, what: str, exc: BaseException) -> None:
        self.prot["errors"][what] = str(exc)

    def setup(self) -> None:
        cfg = self.cfg
        for name in cfg.get("preimport", []):
            try:
                importlib.import_module(name)
            except ImportError as e:
                self._error(f"preimport {name}", e)
        self.slots = []
        for slot in cfg["slots"]:
            fds = {k: os.open(d, os.O_RDONLY | os.O_DIRECTORY) for k, d in slot["cgroup_dirs"].items()}
            self.slots.append({**slot, "fds": fds})
        cfg["proc_fd"] = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        mode = cfg["mode"]
        if mode == "userns":
            self._enter_user_namespace()
        elif mode == "root":
            for key, flag in _NAMESPACES.items():
                try:
                    isolation.unshare(flag)
                    self.prot[key] = True
                except OSError as e:
                    self._error(key, e)
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        if self.prot["ipc_ns"]:
            for name, value in _IPC_SYSCTLS.items():
                try:
                    with open(f"/proc/sys/kernel/{name}", "w") as f:
                        f.write(value)
                except OSError as e:
                    self._error(f"ipc {name}", e)
        if self.prot["uts_ns"]:
            try:
                isolation.sethostname("sandbox")
            except OSError as e:
                self._error("uts_ns", e)
        tmp_root = cfg["root_dir"]
        if self.prot["mount_ns"]:
            try:
                isolation.build_root(cfg["root_dir"], cfg["binds"], cfg["tmp_mb"])
                self.prot["private_root"] = True
                tmp_root = "/tmp"
            except OSError as e:
                self._error("private_root", e)
                os.chdir("/")
        if mode != "none":
            self.prot["pid_ns"] = self._probe_pid_ns()
        self.prot["setuid"] = os.geteuid() == 0 and not self.prot["user_ns"]
        self.prot["caps_dropped"] = self.prot["setuid"] or self.prot["user_ns"]
        cfg["setuid"], cfg["drop_caps"] = self.prot["setuid"], self.prot["user_ns"]
        cfg["pid_ns"] = self.prot["pid_ns"]
        cfg["seccomp"] = self._probe_seccomp()
        self.prot["seccomp"] = cfg["seccomp"] is not None
        for slot in self.slots:
            slot["dir"] = os.path.join(tmp_root, slot["name"])
            os.mkdir(slot["dir"], 0o700)
            if self.prot["setuid"]:
                os.chown(slot["dir"], slot["uid"], slot["uid"])
        self.prot["cgroup_pids"] = bool(self.slots) and all("pids" in s["fds"] for s in self.slots)
        self.prot["cgroup_memory"] = bool(self.slots) and all("memory" in s["fds"] for s in self.slots)
        sys.path[:] = cfg["sys_path"]
        os.environ.clear()  # started with none; programs inherit this empty environment

    def _enter_user_namespace(self) -> None:
        """Unprivileged: a user namespace owning all the others, and a PID namespace of our own
        whose first process (a fork of this one) carries on as the worker, so per-program PID
        namespaces can be made and left again."""
        flags = isolation.CLONE_NEWUSER | isolation.CLONE_NEWPID
        for flag in _NAMESPACES.values():
            flags |= flag
        try:
            isolation.unshare(flags)
            isolation.write_id_maps(self.cfg["uid"], self.cfg["gid"])
        except OSError as e:
            self._error("user_ns", e)
            return
        self.prot.update({k: True for k in _NAMESPACES}, user_ns=True)
        pid = os.fork()
        if pid:  # the original process only waits for the worker and passes on its status
            os.closerange(3, 1 << 20)
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)

    def _probe_pid_ns(self) -> bool:
        try:
            isolation.unshare(isolation.CLONE_NEWPID)
        except OSError as e:
            self._error("pid_ns", e)
            return False
        pid = os.fork()
        if pid == 0:
            os._exit(0 if os.getpid() == 1 else 1)
        try:
            isolation.setns(self.pidns_fd, isolation.CLONE_NEWPID)
        except OSError as e:  # cannot go back: every later child would share one namespace
            os.waitpid(pid, 0)
            raise RuntimeError(f"cannot return to the worker's PID namespace: {e}") from e
        _, status = os.waitpid(pid, 0)
        if status != 0:
            self._error("pid_ns", "the first child of a new PID namespace was not PID 1")
        return status == 0

    def _probe_seccomp(self):
        """The allow-list the host built, if a forked child can install it and is then refused
        a call off the list (a user namespace) with EPERM."""
        if not self.cfg.get("seccomp_filter"):
            self._error("seccomp", self.cfg.get("seccomp_error") or "no filter")
            return None
        try:
            prog = isolation.filter_program(bytes.fromhex(self.cfg["seccomp_filter"]))
        except (OSError, ValueError) as e:
            self._error("seccomp", e)
            return None
        pid = os.fork()
        if pid == 0:
            try:
                isolation.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)
                isolation.install_seccomp(prog)
                isolation.unshare(isolation.CLONE_NEWUSER)  # off the list: refused
                os._exit(1)
            except OSError as e:
                os._exit(0 if e.errno == 1 else 2)
            except BaseException:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            self._error("seccomp", f"the filter did not hold in a probe (status {status})")
            return None
        return prog

    def start_lanes(self) -> list[int]:
        gc.freeze()
        pids = []
        for slot in self.slots:
            pid = os.fork()
            if pid == 0:
                self._lane_main(slot)
            pids.append(pid)
        for slot in self.slots:
            os.close(slot["job_fd"])
            os.close(slot["report_fd"])
        return pids

    def _lane_main(self, slot: dict) -> None:
        try:
            for other in self.slots:
                if other is not slot:
                    os.close(other["job_fd"])
                    os.close(other["report_fd"])
            for fd in slot["fds"].values():
                cg = os.open("cgroup.procs", os.O_WRONLY, dir_fd=fd)
                os.write(cg, b"0")
                os.close(cg)
            try:
                adj = os.open("self/oom_score_adj", os.O_WRONLY, dir_fd=self.cfg["proc_fd"])
                os.write(adj, b"-1000")
                os.close(adj)
            except OSError:
                pass  # unprivileged: the program still goes first (it sets +1000)
            isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)  # orphans come to the lane
            isolation.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)  # inherited by every program
            if self.prot["caps_dropped"]:
                isolation.drop_bounding_set()
            for which, soft, hard in harness.lane_rlimits():
                resource.setrlimit(which, (soft, hard))
            null = os.open("/dev/null", os.O_RDONLY)  # let go of the host's pipe, keep fd 0 taken
            os.dup2(null, 0)
            os.close(null)
            lane = Lane(self.cfg, slot, self.prot, self.pidns_fd)
        except BaseException as e:
            print(f"sandbox lane {slot['name']} failed to start: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        lane.serve()
        os._exit(0)


def _kill_slot_tasks(slots: list[dict]) -> None:
    """Kills whatever is left in the lanes' cgroups (a program that escaped its parent-death
    signal and outlived its lane cannot leave its cgroup)."""
    for slot in slots:
        for key, dir_fd in slot["fds"].items():
            try:
                fd = os.open("cgroup.procs", os.O_RDONLY, dir_fd=dir_fd)
                try:
                    pids = [int(p) for p in os.read(fd, 1 << 16).split()]
                finally:
                    os.close(fd)
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _stop(lanes: list[int], slots: list[dict]) -> None:
    """Waits a little for the lanes to finish on their own, then kills them and what they left."""
    deadline = time.monotonic() + 5.0
    alive = set(lanes)
    while alive and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.01)
        alive.discard(pid)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _kill_slot_tasks(slots)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main() -> None:
    cfg = _read_config()
    isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != cfg["host_pid"]:
        os._exit(1)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)  # a dead lane's programs come here
    worker = Worker(cfg)
    worker.setup()
    send(1, {"hello": worker.prot})
    lanes = worker.start_lanes()
    while True:  # the host writes nothing more; EOF means stop. Meanwhile, reap orphans.
        if select.select([0], [], [], 0.2)[0] and not os.read(0, 4096):
            break
        reap_children()
    _stop(lanes, worker.slots)
    os._exit(0)
