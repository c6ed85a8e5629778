"""One lane of the sandbox worker: runs programs one at a time, each in its own confined process.

A lane is a process forked from the worker after its one-time set-up. It joined its own cgroups
once (so a program's process is born inside them and no per-program migration is paid), and it
reads jobs from its own pipe and writes one JSON report per job on another.

Per job: a new PID namespace (``unshare`` + ``fork`` + ``setns`` back: the program is PID 1 of its
own namespace, so when it ends the kernel kills everything it started), then ``harness`` confines
the child and runs the program. The lane polls the program's exit (a pidfd), its stdout+stderr
(capped) and result channel (capped), and the wall clock; it kills on any overrun, reaps, cleans
the slot's directory and reports. When its job pipe closes it kills what runs and exits.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import time

from mmst_jax.verify import harness, isolation

RESULT_MAX_BYTES = 16384  # the same cap as results.RESULT_MAX_BYTES, checked again on the host
_HEAD_BYTES = 300


def send(fd: int, message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def reap_children() -> None:
    """Reaps every child that has exited, without waiting for the others."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Lane:
    def __init__(self, cfg: dict, slot: dict, prot: dict, pidns_fd: int):
        self.cfg, self.slot, self.prot, self.pidns_fd = cfg, slot, prot, pidns_fd
        self.job_fd, self.report_fd = slot["job_fd"], slot["report_fd"]
        self.files = cfg["cgroup_files"]
        self.applied: dict[str, str] = {}
        self.oom = self._oom_count()
        self.jobs, self.baseline = 0, 0

    # ---- cgroups --------------------------------------------------------------------------
    def _apply_cgroup_limits(self, limits: dict) -> None:
        wanted = {"pids": str(int(limits["max_procs"]) + 1),  # + the lane itself
                  "memory": str((int(limits["memory_mb"]) + 64) * 2**20)}
        for key, value in wanted.items():
            if key in self.slot["fds"] and self.applied.get(key) != value:
                fd = os.open(self.files[key], os.O_WRONLY, dir_fd=self.slot["fds"][key])
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
                self.applied[key] = value

    def _oom_count(self) -> int:
        if "memory" not in self.slot["fds"]:
            return 0
        fd = os.open(self.files["memory_events"], os.O_RDONLY, dir_fd=self.slot["fds"]["memory"])
        try:
            text = os.read(fd, 4096).decode()
        finally:
            os.close(fd)
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    # ---- one program ----------------------------------------------------------------------
    def serve(self) -> None:
        buf = b""
        while True:
            while b"\n" not in buf:
                chunk = os.read(self.job_fd, 1 << 20)
                if not chunk:
                    os._exit(0)
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            job = json.loads(line)
            try:
                report = self.run(job)
            except OSError as e:
                report = {"id": job["id"], "failed": f"{type(e).__name__}: {e}"}
            send(self.report_fd, report)
            if report.get("shutdown"):
                os._exit(0)

    def _fork(self, job: dict, out_w: int, res_w: int) -> int:
        if self.jobs % 64 == 0:  # the lane's size barely moves; read it now and then
            self.baseline = harness.address_space(self.cfg["proc_fd"])
        self.jobs += 1
        baseline = self.baseline
        gc.freeze()
        pid_ns = self.prot["pid_ns"]
        if pid_ns:
            isolation.unshare(isolation.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                harness.child_main(job, self.slot, self.cfg, out_w, res_w, baseline)  # never returns
        finally:
            if pid_ns:
                isolation.setns(self.pidns_fd, isolation.CLONE_NEWPID)
        return pid

    def run(self, job: dict) -> dict:
        limits = job["limits"]
        self._apply_cgroup_limits(limits)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        start = time.monotonic()
        try:
            pid = self._fork(job, out_w, res_w)
        finally:
            os.close(out_w)
            os.close(res_w)
        pidfd = os.pidfd_open(pid)
        st = {"killed": None, "out": 0, "head": b"", "res": b"", "open": {out_r: "out", res_r: "res"}}
        poller = select.poll()
        for fd in (pidfd, out_r, res_r):
            poller.register(fd, select.POLLIN)
        poller.register(self.job_fd, 0)  # only POLLHUP: the host went away
        deadline = start + float(limits["timeout_s"])
        shutdown = exited = False
        while not exited:
            wait = None if st["killed"] else max(0, int((deadline - time.monotonic()) * 1000) + 1)
            for fd, ev in poller.poll(wait):
                if fd == pidfd:
                    exited = True
                elif fd == self.job_fd:
                    shutdown = True
                    poller.unregister(fd)
                    self._kill(pid, st, "shutdown")
                elif fd in st["open"]:
                    self._read(fd, st, pid, limits, poller)
            if st["killed"] is None and time.monotonic() >= deadline:
                self._kill(pid, st, "timeout")
        _, status, usage = os.wait4(pid, 0)
        elapsed_ms = (time.monotonic() - start) * 1000.0
        os.close(pidfd)
        for fd in list(st["open"]):  # drain what is left without waiting for EOF
            os.set_blocking(fd, False)
            for _ in range(64):
                before = st["out"] + len(st["res"])
                try:
                    self._read(fd, st, pid, limits, None)
                except BlockingIOError:
                    break
                if fd not in st["open"] or st["out"] + len(st["res"]) == before:
                    break
        for fd in st["open"]:
            os.close(fd)
        if not self.prot["pid_ns"]:
            self._killpg(pid)
            self._kill_cgroup()
            self._reap_orphans()
        report = {"id": job["id"], "killed": st["killed"], "elapsed_ms": round(elapsed_ms, 3),
                  "output_bytes": st["out"], "cpu_s": usage.ru_utime + usage.ru_stime,
                  "cpu_limit": harness.cpu_limit(limits), "timeout_s": limits["timeout_s"],
                  "output_cap": limits["max_output_bytes"]}
        if shutdown:
            report["shutdown"] = True
        if os.WIFSIGNALED(status):
            report["signal"] = os.WTERMSIG(status)
            if report["signal"] == signal.SIGKILL and st["killed"] is None:
                count = self._oom_count()
                report["oom"] = count > self.oom
                self.oom = count
        else:
            report["exit"] = os.WEXITSTATUS(status)
            if report["exit"] == harness.EXIT_SETUP_FAILED:
                report["failed"] = st["head"].decode("utf-8", "replace")
        if st["res"]:
            report["result"] = st["res"].decode("latin-1")
        self._clean()
        return report

    def _read(self, fd: int, st: dict, pid: int, limits: dict, poller) -> None:
        data = os.read(fd, 65536)
        if not data:
            if poller is not None:
                poller.unregister(fd)
            os.close(fd)
            del st["open"][fd]
            return
        if st["open"][fd] == "out":
            st["out"] += len(data)
            if len(st["head"]) < _HEAD_BYTES:
                st["head"] += data[:_HEAD_BYTES - len(st["head"])]
            if st["out"] > limits["max_output_bytes"]:
                self._kill(pid, st, "output")
        else:
            st["res"] += data
            if len(st["res"]) > RESULT_MAX_BYTES:
                st["res"] = st["res"][:RESULT_MAX_BYTES + 1]
                self._kill(pid, st, "result")

    def _kill(self, pid: int, st: dict, why: str) -> None:
        if st["killed"] is None:
            st["killed"] = why
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self.prot["pid_ns"]:
            self._killpg(pid)

    def _kill_cgroup(self) -> None:
        """Without a PID namespace: kill whatever else is in the lane's pids cgroup (a process
        that called setsid left the process group, not the cgroup)."""
        if "pids" not in self.slot["fds"]:
            return
        me = os.getpid()
        for _ in range(100):
            fd = os.open("cgroup.procs", os.O_RDONLY, dir_fd=self.slot["fds"]["pids"])
            try:
                others = [int(p) for p in os.read(fd, 1 << 16).split() if int(p) != me]
            finally:
                os.close(fd)
            if not others:
                return
            for other in others:
                try:
                    os.kill(other, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)

    @staticmethod
    def _reap_orphans() -> None:
        """The lane is a child subreaper: orphans of its programs come to it, and are reaped."""
        reap_children()

    @staticmethod
    def _killpg(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    def _clean(self) -> None:
        """Empties the slot's directory (programs may write files only there)."""
        path = self.slot["dir"]
        try:
            names = os.listdir(path)
        except OSError:
            names = None
        if names:
            _remove_contents(path)
        if names is None or os.stat(path).st_mode & 0o7777 != 0o700:
            os.chmod(path, 0o700)


def _remove_contents(path: str) -> None:
    """Removes everything below `path`, never following a symbolic link (the program that made
    them is dead: nothing changes them meanwhile)."""
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, 0o700)
                    _remove_contents(entry.path)
                    os.rmdir(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
