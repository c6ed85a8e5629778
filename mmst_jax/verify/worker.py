"""The sandbox worker: a warm, pre-imported process that forks one confined process per program.

Started by ``sandbox.Sandbox`` as ``python -I -S`` with an empty environment. It reads its
configuration (one JSON line) on stdin, sets itself up once — cgroup directory handles opened,
then new mount/network/IPC/UTS namespaces (a user namespace too when not root), a private root
file system, SysV IPC disabled — and says hello with the protections actually in force. Then it
reads jobs (one JSON line each: id, code, entry, limits) and answers each with one JSON report.

Per job: a new PID namespace (``unshare`` + ``fork`` + ``setns`` back, so the program is PID 1
of its own namespace and everything it starts dies with it), the slot's cgroups, and the
confinement in ``harness``. The worker watches stdout+stderr (capped), the result channel
(capped), the wall clock and the process's exit through a pidfd, kills on any overrun, reaps,
cleans the slot's directory and reports. The worker itself never runs untrusted code, never sees
a gold answer, and exits (killing every program it started) when its stdin closes.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import shutil
import signal
import sys
import time

from mmst_jax.verify import harness, isolation

RESULT_MAX_BYTES = 16384  # the same cap as results.RESULT_MAX_BYTES, checked again on the host
_HEAD_BYTES = 300
_IPC_SYSCTLS = {"shmmni": "0", "msgmni": "0", "sem": "0 0 0 0"}


def _send(message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


class Worker:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.prot = {"mode": cfg["mode"], "errors": {}}
        self.running: dict[int, dict] = {}
        self.queue: list[dict] = []
        self.sel = selectors.DefaultSelector()
        self.stdin_buf = b""
        self.closing = False

    # ---- set-up, once -------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        for name in cfg.get("preimport", []):
            try:
                importlib.import_module(name)
            except ImportError as e:
                self.prot["errors"][f"preimport {name}"] = str(e)
        self.slots = []
        for slot in cfg["slots"]:
            fds = {k: os.open(d, os.O_RDONLY | os.O_DIRECTORY) for k, d in slot["cgroup_dirs"].items()}
            self.slots.append({**slot, "fds": fds, "cgroup_fds": list(fds.values()),
                               "limits": {}, "oom": 0, "busy": False})
            self.slots[-1]["oom"] = self._oom_count(self.slots[-1])
        self.status_fd = os.open("/proc/self/status", os.O_RDONLY)
        cfg["status_fd"] = self.status_fd
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        mode = cfg["mode"]
        ns = {"net_ns": isolation.CLONE_NEWNET, "mount_ns": isolation.CLONE_NEWNS,
              "ipc_ns": isolation.CLONE_NEWIPC, "uts_ns": isolation.CLONE_NEWUTS}
        self.prot.update({k: False for k in ns}, user_ns=False, pid_ns=False, private_root=False,
                         setuid=False, caps_dropped=False)
        if mode == "userns":
            try:
                flags = isolation.CLONE_NEWUSER
                for v in ns.values():
                    flags |= v
                isolation.unshare(flags)
                isolation.write_id_maps(cfg["uid"], cfg["gid"])
                self.prot.update({k: True for k in ns}, user_ns=True)
            except OSError as e:
                self.prot["errors"]["user_ns"] = str(e)
        elif mode == "root":
            for key, flag in ns.items():
                try:
                    isolation.unshare(flag)
                    self.prot[key] = True
                except OSError as e:
                    self.prot["errors"][key] = str(e)
        if self.prot["ipc_ns"]:
            for name, value in _IPC_SYSCTLS.items():
                try:
                    with open(f"/proc/sys/kernel/{name}", "w") as f:
                        f.write(value)
                except OSError as e:
                    self.prot["errors"][f"ipc {name}"] = str(e)
        if self.prot["uts_ns"]:
            try:
                isolation.sethostname("sandbox")
            except OSError as e:
                self.prot["errors"]["uts_ns"] = str(e)
        tmp_root = cfg["root_dir"]
        if self.prot["mount_ns"]:
            try:
                isolation.build_root(cfg["root_dir"], cfg["binds"], cfg["tmp_mb"])
                self.prot["private_root"] = True
                tmp_root = "/tmp"
            except OSError as e:
                self.prot["errors"]["private_root"] = str(e)
                os.chdir("/")
        if mode != "none":
            self.prot["pid_ns"] = self._probe_pid_ns()
        self.prot["setuid"] = os.geteuid() == 0 and not self.prot["user_ns"] and mode != "none"
        self.prot["caps_dropped"] = self.prot["setuid"] or self.prot["user_ns"]
        self.cfg["setuid"] = self.prot["setuid"]
        self.cfg["drop_caps"] = self.prot["user_ns"]
        for slot in self.slots:
            slot["dir"] = os.path.join(tmp_root, slot["name"])
            os.mkdir(slot["dir"], 0o700)
            if self.prot["setuid"]:
                os.chown(slot["dir"], slot["uid"], slot["uid"])
        self.prot["cgroup_pids"] = all("pids" in s["fds"] for s in self.slots) and bool(self.slots)
        self.prot["cgroup_memory"] = all("memory" in s["fds"] for s in self.slots) and bool(self.slots)
        sys.path[:] = cfg["sys_path"]
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, ("stdin", None))
        gc.freeze()

    def _probe_pid_ns(self) -> bool:
        try:
            isolation.unshare(isolation.CLONE_NEWPID)
        except OSError as e:
            self.prot["errors"]["pid_ns"] = str(e)
            return False
        pid = os.fork()
        if pid == 0:
            os._exit(0 if os.getpid() == 1 else 1)
        try:
            isolation.setns(self.pidns_fd, isolation.CLONE_NEWPID)
        except OSError as e:  # cannot go back: every later child would share one namespace
            self.prot["errors"]["pid_ns"] = f"cannot return to the worker's namespace: {e}"
            os.waitpid(pid, 0)
            raise
        _, status = os.waitpid(pid, 0)
        if status != 0:
            self.prot["errors"]["pid_ns"] = "the first child was not PID 1"
        return status == 0

    # ---- one job ------------------------------------------------------------------------
    def _apply_cgroup_limits(self, slot: dict, limits: dict) -> None:
        wanted = {"pids": (str(limits["max_procs"]), self.cfg["cgroup_files"].get("pids")),
                  "memory": (str((int(limits["memory_mb"]) + 64) * 2**20),
                             self.cfg["cgroup_files"].get("memory"))}
        for key, (value, filename) in wanted.items():
            if key in slot["fds"] and slot["limits"].get(key) != value:
                fd = os.open(filename, os.O_WRONLY, dir_fd=slot["fds"][key])
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
                slot["limits"][key] = value

    def _oom_count(self, slot: dict) -> int:
        if "memory" not in slot["fds"]:
            return 0
        fd = os.open(self.cfg["cgroup_files"]["memory_events"], os.O_RDONLY, dir_fd=slot["fds"]["memory"])
        try:
            text = os.read(fd, 4096).decode()
        finally:
            os.close(fd)
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def start(self, job: dict, slot: dict) -> None:
        limits = job["limits"]
        try:
            self._apply_cgroup_limits(slot, limits)
        except OSError as e:
            _send({"id": job["id"], "failed": f"setting cgroup limits: {e}"})
            return
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        gc.freeze()
        pid_ns = self.prot["pid_ns"]
        if pid_ns:
            isolation.unshare(isolation.CLONE_NEWPID)
        try:
            pid = os.fork()
        except OSError as e:
            pid, error = -1, e
        if pid == 0:
            harness.child_main(job, slot, self.cfg, out_w, res_w)
        if pid_ns:
            isolation.setns(self.pidns_fd, isolation.CLONE_NEWPID)
        os.close(out_w)
        os.close(res_w)
        if pid < 0:
            os.close(out_r)
            os.close(res_r)
            _send({"id": job["id"], "failed": f"fork: {error}"})
            return
        now = time.monotonic()
        run = {"job": job, "slot": slot, "pid": pid, "start": now,
               "deadline": now + float(limits["timeout_s"]), "killed": None, "out": 0,
               "head": b"", "res": b"", "fds": {out_r: "out", res_r: "res"}}
        slot["busy"] = True
        self.running[pid] = run
        pidfd = os.pidfd_open(pid)
        run["pidfd"] = pidfd
        for fd, what in ((out_r, "out"), (res_r, "res")):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, (what, run))
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", run))

    def _kill(self, run: dict, why: str) -> None:
        if run["killed"] is None:
            run["killed"] = why
        try:
            os.kill(run["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self.prot["pid_ns"]:
            try:
                os.killpg(run["pid"], signal.SIGKILL)
            except OSError:
                pass

    def _read(self, fd: int, what: str, run: dict) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(fd)
            os.close(fd)
            del run["fds"][fd]
            return
        if what == "out":
            run["out"] += len(data)
            if len(run["head"]) < _HEAD_BYTES:
                run["head"] += data[:_HEAD_BYTES - len(run["head"])]
            if run["out"] > run["job"]["limits"]["max_output_bytes"]:
                self._kill(run, "output")
        else:
            run["res"] += data
            if len(run["res"]) > RESULT_MAX_BYTES:
                run["res"] = run["res"][:RESULT_MAX_BYTES + 1]
                self._kill(run, "result")

    def finish(self, run: dict) -> None:
        _, status, usage = os.wait4(run["pid"], 0)
        elapsed_ms = (time.monotonic() - run["start"]) * 1000.0
        for fd, what in list(run["fds"].items()):  # drain what is left without waiting for EOF
            for _ in range(64):
                before = (run["out"], len(run["res"]))
                self._read(fd, what, run)
                if fd not in run["fds"] or (run["out"], len(run["res"])) == before:
                    break
        for fd in run["fds"]:
            self.sel.unregister(fd)
            os.close(fd)
        self.sel.unregister(run["pidfd"])
        os.close(run["pidfd"])
        del self.running[run["pid"]]
        slot, job = run["slot"], run["job"]
        if not self.prot["pid_ns"]:
            try:
                os.killpg(run["pid"], signal.SIGKILL)
            except OSError:
                pass
        report = {"id": job["id"], "killed": run["killed"], "elapsed_ms": round(elapsed_ms, 3),
                  "output_bytes": run["out"], "cpu_s": usage.ru_utime + usage.ru_stime,
                  "cpu_limit": harness._rlimits(job["limits"], 0)[0][1],
                  "timeout_s": job["limits"]["timeout_s"],
                  "output_cap": job["limits"]["max_output_bytes"]}
        if os.WIFSIGNALED(status):
            report["signal"] = os.WTERMSIG(status)
            if report["signal"] == signal.SIGKILL and run["killed"] is None:
                count = self._oom_count(slot)
                report["oom"] = count > slot["oom"]
                slot["oom"] = count
        else:
            report["exit"] = os.WEXITSTATUS(status)
            if report["exit"] == harness._EXIT_SETUP_FAILED:
                report["failed"] = run["head"].decode("utf-8", "replace")
        if run["res"]:
            report["result"] = run["res"].decode("latin-1")
        self._clean(slot)
        slot["busy"] = False
        _send(report)

    def _clean(self, slot: dict) -> None:
        path = slot["dir"]
        try:
            names = os.listdir(path)
        except OSError:
            names = None
        if names:
            for name in names:
                full = os.path.join(path, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full, ignore_errors=True)
                else:
                    try:
                        os.unlink(full)
                    except OSError:
                        pass
        if names is None or os.stat(path).st_mode & 0o7777 != 0o700:
            os.chmod(path, 0o700)

    # ---- the loop -----------------------------------------------------------------------
    def _on_stdin(self) -> None:
        try:
            data = os.read(0, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(0)
            self.closing = True
            return
        self.stdin_buf += data
        *lines, self.stdin_buf = self.stdin_buf.split(b"\n")
        for line in lines:
            if line.strip():
                self.queue.append(json.loads(line))

    def _dispatch(self) -> None:
        while self.queue:
            free = [s for s in self.slots if not s["busy"]]
            if not free:
                return
            self.start(self.queue.pop(0), free[0])

    def loop(self) -> None:
        _send({"hello": self.prot})
        while not (self.closing and not self.running):
            if self.closing:
                for run in list(self.running.values()):
                    self._kill(run, "shutdown")
            self._dispatch()
            now = time.monotonic()
            deadlines = [r["deadline"] for r in self.running.values() if r["killed"] is None]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            for key, _ in self.sel.select(timeout):
                what, run = key.data
                if what == "stdin":
                    self._on_stdin()
                elif what == "exit":
                    self.finish(run)
                elif run["pid"] in self.running and key.fd in run["fds"]:
                    self._read(key.fd, what, run)
            now = time.monotonic()
            for run in list(self.running.values()):
                if run["killed"] is None and now >= run["deadline"]:
                    self._kill(run, "timeout")


def main() -> None:
    line = b""
    while not line.endswith(b"\n"):  # unbuffered: the jobs that follow stay in the pipe
        chunk = os.read(0, 1)
        if not chunk:
            os._exit(1)
        line += chunk
    cfg = json.loads(line)
    isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != cfg["host_pid"]:
        os._exit(1)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    worker = Worker(cfg)
    worker.setup()
    worker.loop()
    os._exit(0)
