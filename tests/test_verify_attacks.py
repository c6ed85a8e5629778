"""The adversarial bank: hostile programs run in the real sandbox, each with its exact outcome, and
the host checked untouched afterwards (its files, its listeners, no process left behind).

Every protection must be in force: the sandbox refuses to start without one, so a machine that
lacks it fails these tests (saying which and how to get it) instead of skipping them. Attacks
that could harm the machine (fork, thread and memory bombs) run only after a harmless probe has
confirmed that what holds them holds; otherwise they fail. The seccomp allow-list refuses process
creation, sockets, signals and namespaces outright; the PID namespace, cgroups and rlimits stay
behind it.
"""

import dataclasses
import os
import socket
import time

import pytest

from mmst_jax.verify.results import Limits
from mmst_jax.verify.sandbox import Sandbox
from mmst_jax.verify.verifier import verify_records

# A generous wall clock, so that a loaded machine cannot turn a result into a timeout; the
# programs meant to time out run under QUICK.
LIMITS = Limits(timeout_s=10.0, memory_mb=128, max_procs=16, max_file_mb=4.0)
QUICK = dataclasses.replace(LIMITS, timeout_s=1.0)
GOLD = 987654321  # a number that appears nowhere but in the gold answers below


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(lanes=4, limits=LIMITS)  # UnprotectedSandboxError without every protection
    yield box
    box.close()


@pytest.fixture(scope="module")
def host_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("host")
    sentinel = root / "sentinel.txt"
    sentinel.write_text("untouched")
    return root, sentinel


def run_one(sandbox, code, limits=None):
    return sandbox.run([code], limits=limits)[0]


def require(sandbox, *names):
    for name in names:
        assert getattr(sandbox.protections, name), f"{name} is not active: {sandbox.protections.describe()}"


def assert_no_strays(sandbox):
    deadline = time.monotonic() + 5.0
    while sandbox.stray_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.stray_processes() == []


# ---- the simple cases: one program, one exact outcome -------------------------------------
# (name, code, status, detail substring or None, value[, the protection it needs])
BANK = [
    ("infinite loop", "def solution():\n    while True:\n        pass\n", "timeout", "wall clock", None),
    ("sleep past the wall limit", "import time\ndef solution():\n    time.sleep(60)\n", "timeout", "wall clock", None),
    ("signal tampering then spin",
     "import signal\ndef solution():\n    for s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGALRM):\n"
     "        try:\n            signal.signal(s, signal.SIG_IGN)\n        except OSError:\n            pass\n"
     "    while True:\n        pass\n", "timeout", None, None),
    ("signal tampering is refused", "import signal\ndef solution():\n    signal.signal(signal.SIGXCPU, signal.SIG_IGN)\n",
     "error", "Operation not permitted", None, "seccomp"),
    ("deep recursion", "def f(n):\n    return f(n + 1) + 1\ndef solution():\n    return f(0)\n",
     "error", "RecursionError", None),
    ("C-level recursion", "import json\ndef solution():\n    return json.loads('[' * 10**6)\n",
     "error", "RecursionError", None),
    ("huge output", "def solution():\n    print('x' * 10**7)\n    return 1\n", "output_limit", "over 65536", None),
    ("output flood on stderr", "import sys\ndef solution():\n    while True:\n        sys.stderr.write('y' * 4096)\n",
     "output_limit", None, None),
    ("write outside its directory", "def solution():\n    open('/usr/evil.txt', 'w').write('x')\n",
     "error", "Read-only file system", None, "private_root"),
    ("read /etc/passwd", "def solution():\n    return open('/etc/passwd').read()\n", "error", "FileNotFoundError", None, "private_root"),
    ("read the parent's /proc", "import os\ndef solution():\n    return open(f'/proc/{os.getppid()}/environ').read()\n",
     "error", "FileNotFoundError", None, "private_root"),
    ("list /proc", "import os\ndef solution():\n    return os.listdir('/proc')\n", "error", "FileNotFoundError", None, "private_root"),
    ("environment snooping", "import os\ndef solution():\n    return str(sorted(os.environ.items()))\n", "ok", None, "[]"),
    ("kill the parent and everything visible",
     "import os, signal\ndef solution():\n    for pid in (os.getppid(), 0, -1, *range(1, 400)):\n        try:\n"
     "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return 'alive'\n",
     "ok", None, "alive", "pid_ns"),
    ("os._exit before returning", "import os\ndef solution():\n    os._exit(0)\n", "error", "exited with status 0", None),
    ("sys.exit inside solution", "import sys\ndef solution():\n    sys.exit(0)\n", "error", "SystemExit", None),
    ("SystemExit at import", "raise SystemExit(3)\ndef solution():\n    return 1\n", "error", "SystemExit: 3", None),
    ("KeyboardInterrupt", "def solution():\n    raise KeyboardInterrupt\n", "error", "KeyboardInterrupt", None),
    ("import posix to run a shell", "import posix\ndef solution():\n    return posix.system('cat /etc/passwd > /dev/null 2>&1')\n",
     "ok", None, 127 << 8, "seccomp"),  # the C library's "no shell": its spawn was refused
    ("exec a shell in place", "import os\ndef solution():\n    os.execv('/bin/sh', ['sh', '-c', 'echo 1'])\n",
     "error", "Operation not permitted", None, "seccomp"),
    ("fork", "import os\ndef solution():\n    return os.fork()\n", "error", "Operation not permitted", None, "seccomp"),
    ("a thread", "import threading\ndef solution():\n    threading.Thread(target=print).start()\n",
     "error", "can't start new thread", None, "seccomp"),
    ("open a socket", "import socket\ndef solution():\n    socket.socket()\n", "error", "Operation not permitted", None, "seccomp"),
    ("make a directory", "import os\ndef solution():\n    os.mkdir('d')\n", "error", "Operation not permitted", None, "seccomp"),
    ("ctypes NULL dereference", "import ctypes\ndef solution():\n    return ctypes.string_at(0)\n", "error", "SIGSEGV", None),
    ("ctypes setuid(0)", "import ctypes\ndef solution():\n    return ctypes.CDLL(None).setuid(0)\n", "ok", None, -1, "caps_dropped"),
    ("SysV shared memory that would outlive it",
     "import ctypes\ndef solution():\n    return ctypes.CDLL(None).shmget(0, 1 << 20, 0o1000 | 0o600)\n", "ok", None, -1, "ipc_ns"),
    ("exhaust file descriptors", "import os\ndef solution():\n    return [os.open('/dev/null', os.O_RDONLY) for _ in range(10**4)]\n",
     "error", "Too many open files", None),
    ("one giant file", "def solution():\n    open('big', 'wb').write(b'x' * (64 * 2**20))\n", "error", "File too large", None),
    ("fill the temporary file system",
     "def solution():\n    for i in range(100):\n        open(f'f{i}', 'wb').write(b'x' * (4 * 2**20 - 1))\n",
     "error", "No space left on device", None, "private_root"),
    ("peek into another lane's directory",
     "import os\ndef solution():\n    return [os.listdir('/tmp/' + d) for d in os.listdir('/tmp')]\n",
     "error", "PermissionError", None, "setuid"),
    ("a user namespace of its own", "import ctypes\ndef solution():\n    return ctypes.CDLL(None).unshare(0x10000000)\n",
     "ok", None, -1, "seccomp"),
    ("namespaces through clone", "import ctypes, platform\ndef solution():\n    return ctypes.CDLL(None).syscall({'x86_64': 56, 'aarch64': 220}[platform.machine()], 0x10000000 | 17, 0, 0, 0, 0)\n",
     "ok", None, -1, "seccomp"),
    ("mount a tmpfs", "import ctypes\ndef solution():\n    return ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, None)\n",
     "ok", None, -1, "seccomp"),
    ("ptrace", "import ctypes\ndef solution():\n    return ctypes.CDLL(None).ptrace(16, 1, 0, 0)\n", "ok", None, -1, "seccomp"),
    ("chroot / setuid in Python", "import os\ndef solution():\n    os.setuid(0)\n", "error", "PermissionError", None, "caps_dropped"),
    ("lying __eq__", "class Any:\n    def __eq__(self, other):\n        return True\ndef solution():\n    return Any()\n",
     "rejected", "not an int, float, str", None),
    ("float subclass with a lying __float__",
     "class F(float):\n    def __float__(self):\n        return 987654321.0\n    def __eq__(self, o):\n        return True\n"
     "def solution():\n    return F(1.0)\n", "rejected", "not an int, float, str", None),
    ("int subclass", "class I(int):\n    pass\ndef solution():\n    return I(5)\n", "rejected", None, None),
    ("bool", "def solution():\n    return True\n", "rejected", "bool", None),
    ("NaN", "def solution():\n    return float('nan')\n", "rejected", "not a number", None),
    ("infinity", "def solution():\n    return float('inf')\n", "rejected", "not a number", None),
    ("a list holding an object", "def solution():\n    return [1, object()]\n", "rejected", None, None),
    ("a string too long", "def solution():\n    return 'x' * 10**6\n", "rejected", "characters", None),
    ("flood the result channel", "import os\ndef solution():\n    while True:\n        os.write(3, b'x' * 4096)\n",
     "rejected", "result over", None),
    ("a second result line", "import os\ndef solution():\n    os.write(3, b'{\"value\": 1}\\n')\n    return 2\n",
     "rejected", "exactly one line", None),
    ("a malformed result line", "import os\ndef solution():\n    os.write(3, b'{\"value\": NaN}\\n')\n    os._exit(0)\n",
     "rejected", "not a number", None),
    ("a pickle on the result channel",
     "import os, pickle\ndef solution():\n    os.write(3, pickle.dumps(os.system) + b'\\n')\n    os._exit(0)\n",
     "rejected", None, None),
    ("syntax error", "def solution(:\n    return 1\n", "error", "SyntaxError", None),
    ("no solution()", "x = 1\n", "error", "defines no solution()", None),
]


@pytest.mark.parametrize("case", BANK, ids=[b[0] for b in BANK])
def test_attack(sandbox, host_files, case):
    name, code, status, detail, value, *needs = case
    _, sentinel = host_files
    require(sandbox, *needs)
    result = run_one(sandbox, code, QUICK if status == "timeout" else None)
    assert result.status == status, result
    if detail is not None:
        assert detail in result.detail, result
    if status == "ok":
        assert result.value == value, result
    assert sentinel.read_text() == "untouched"


def test_the_bank_is_large():
    assert len({b[0] for b in BANK}) >= 30


# ---- attacks on the host's files, sockets and processes ------------------------------------
def test_host_files_cannot_be_written_read_or_deleted(sandbox, host_files, data_dir):
    require(sandbox, "private_root")
    root, sentinel = host_files
    programs = [
        f"def solution():\n    open({str(sentinel)!r}, 'w').write('owned')\n",
        f"import os\ndef solution():\n    os.remove({str(sentinel)!r})\n",
        f"def solution():\n    return open({str(sentinel)!r}).read()\n",
        f"def solution():\n    open({str(root / 'new.txt')!r}, 'w').write('x')\n",
        f"import os\ndef solution():\n    return os.listdir({str(data_dir)!r})\n",
        f"def solution():\n    return open({str(data_dir / 'gsm8k' / 'test.jsonl')!r}).read(100)\n",
    ]
    for result in sandbox.run(programs):
        assert result.status == "error" and "FileNotFoundError" in result.detail, result
    assert sentinel.read_text() == "untouched"
    assert sorted(p.name for p in root.iterdir()) == ["sentinel.txt"]


def test_files_inside_its_directory_are_private_and_gone_afterwards(sandbox):
    write = "import os\ndef solution():\n    open('note.txt', 'w').write('secret')\n    return open('note.txt').read()\n"
    assert run_one(sandbox, write).value == "secret"
    look = "import os\ndef solution():\n    return str(os.listdir('.'))\n"
    # as many programs as lanes: every lane's directory is looked at
    assert [r.value for r in sandbox.run([look] * sandbox.n_lanes)] == ["[]"] * sandbox.n_lanes


def test_socket_to_a_host_listener_does_not_connect(sandbox):
    require(sandbox, "net_ns")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0mmst-verify-test-{os.getpid()}"
    abstract.bind(name)
    abstract.listen(8)
    abstract.setblocking(False)
    try:
        tcp, unix = sandbox.run([
            f"import socket\ndef solution():\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n    return 'connected'\n",
            f"import socket\ndef solution():\n    s = socket.socket(socket.AF_UNIX)\n    s.connect({name!r})\n    return 'connected'\n",
        ])
        # refused a socket by seccomp (behind it, the network namespace would leave it unconnected)
        assert tcp.status == "error" and "Operation not permitted" in tcp.detail, tcp
        assert unix.status == "error" and "Operation not permitted" in unix.detail, unix
        for sock in (listener, abstract):
            with pytest.raises(BlockingIOError):
                sock.accept()
    finally:
        listener.close()
        abstract.close()


def test_environment_of_the_host_does_not_leak(monkeypatch):
    monkeypatch.setenv("MMST_TEST_SECRET", "hunter2")
    with Sandbox(lanes=1, limits=LIMITS) as box:
        result = box.run(["import os\ndef solution():\n    return os.environ.get('MMST_TEST_SECRET', 'absent')\n"])[0]
    assert result.value == "absent"


def test_killing_siblings_leaves_them_running(sandbox):
    require(sandbox, "pid_ns")  # without it, a program run as root could signal the whole host
    killer = ("import os, signal, time\ndef solution():\n    time.sleep(0.1)\n    for pid in range(1, 2000):\n"
              "        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n"
              "    return 'done'\n")
    sibling = "import time\ndef solution():\n    time.sleep(0.4)\n    return 42\n"
    results = sandbox.run([sibling, killer, sibling, sibling])
    assert [r.value for r in results] == [42, "done", 42, 42]
    assert run_one(sandbox, "def solution():\n    return 7\n").value == 7


def test_the_gold_is_nowhere_in_the_sandbox(sandbox):
    search = (
        "import gc, sys\n"
        "def solution():\n"
        "    needle = str(987654320 + 1)\n"
        "    found = []\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None:\n"
        "        for scope in (frame.f_locals, frame.f_globals):\n"
        "            if any(needle in repr(v)[:10**5] for k, v in list(scope.items()) if k != 'needle'):\n"
        "                found.append(frame.f_code.co_name)\n"
        "        frame = frame.f_back\n"
        "    for obj in gc.get_objects():\n"
        "        if type(obj) in (str, bytes) and obj is not needle and needle in str(obj)[:10**6]:\n"
        "            found.append(type(obj).__name__)\n"
        "    return str(found)\n")
    records = [{"problem_id": 1, "dataset": "gsm8k", "method": "code", "sample_index": 0,
                "completion": search, "gold": f"#### {GOLD}"}]
    [verified] = verify_records(records, sandbox=sandbox)
    assert verified["status"] == "no_answer" and "[]" in verified["detail"], verified
    assert verified["correct"] is False


FAKES = {
    "print a fake result marker": "def solution():\n    print('{\"value\": %d}')\n    return 0\n" % GOLD,
    "write a fake result and exit": "import os\ndef solution():\n    os.write(3, b'{\"value\": 5}\\n')\n    os._exit(0)\n",
    "monkeypatch json.dumps": "import json\njson.dumps = lambda *a, **k: '{\"correct\": true}'\ndef solution():\n    return 5\n",
    "monkeypatch the harness":
        "import sys\ndef solution():\n    h = sys.modules['mmst_jax.verify.harness']\n"
        "    h._plain = lambda v: {'value': 5, 'correct': True}\n    return 1\n",
    "monkeypatch builtins": "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.type = lambda *a: int\n"
                            "def solution():\n    return object()\n",
    "frame introspection into the harness":
        "import sys\ndef solution():\n    f = sys._getframe(1)\n    f.f_locals['message'] = {'value': 5}\n"
        "    f.f_globals['json'] = None\n    return 5\n",
}


@pytest.mark.parametrize("name", sorted(FAKES))
def test_faking_the_result_never_makes_it_correct(sandbox, name):
    records = [{"problem_id": 1, "dataset": "gsm8k", "method": "code", "sample_index": 0,
                "completion": FAKES[name], "gold": f"#### {GOLD}"}]
    [verified] = verify_records(records, sandbox=sandbox)
    assert verified["correct"] is False, verified
    assert verified["answer"] != str(GOLD), verified


# ---- processes: daemons, escapes, bombs ---------------------------------------------------
def test_a_daemon_does_not_outlive_its_program(sandbox):
    require(sandbox, "pid_ns", "seccomp")
    daemon = ("import os, time\ndef solution():\n    if os.fork() == 0:\n        os.setsid()\n"
              "        if os.fork() == 0:\n            time.sleep(30)\n        os._exit(0)\n    return 1\n")
    result = run_one(sandbox, daemon)
    assert result.status == "error" and "Operation not permitted" in result.detail, result
    assert_no_strays(sandbox)


def test_setsid_children_are_killed_on_timeout(sandbox):
    require(sandbox, "pid_ns", "seccomp")
    escape = ("import os\ndef solution():\n    for _ in range(4):\n        try:\n            if os.fork() == 0:\n"
              "                os.setsid()\n                while True:\n                    pass\n"
              "        except OSError:\n            pass\n    while True:\n        pass\n")
    assert run_one(sandbox, escape, QUICK).status == "timeout"
    assert_no_strays(sandbox)


@pytest.fixture(scope="module")
def process_cap(sandbox):
    """Confirms with a harmless probe that a program gets no second process; fails otherwise."""
    require(sandbox, "pid_ns", "cgroup_pids", "seccomp")
    assert sandbox.protections.reaps_everything and sandbox.protections.holds_fork_bomb
    probe = ("import os, time\ndef solution():\n    n = 0\n    for _ in range(40):\n        try:\n"
             "            if os.fork() == 0:\n                time.sleep(0.5)\n                os._exit(0)\n"
             "            n += 1\n        except OSError:\n            break\n    return n\n")
    result = run_one(sandbox, probe)
    assert result.status == "ok" and result.value == 0, f"a program forked: {result}; bombs not run"
    assert_no_strays(sandbox)
    return result.value


@pytest.fixture(scope="module")
def memory_cap(sandbox):
    probe = f"def solution():\n    x = bytearray({(LIMITS.memory_mb + 32) * 2**20})\n    return len(x)\n"
    result = run_one(sandbox, probe)
    assert result.status == "memory", f"the memory cap did not hold in the probe ({result}); memory bombs not run"


def test_fork_bomb(sandbox, process_cap):
    bomb = "import os\ndef solution():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    assert run_one(sandbox, bomb, QUICK).status == "timeout"
    assert_no_strays(sandbox)


def test_thread_bomb(sandbox, process_cap):
    bomb = ("import threading, time\ndef solution():\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n")
    result = run_one(sandbox, bomb)
    assert result.status == "error" and "can't start new thread" in result.detail, result
    assert_no_strays(sandbox)


def test_memory_bomb_at_once(sandbox, memory_cap):
    result = run_one(sandbox, "def solution():\n    x = bytearray(10**11)\n")
    assert result.status == "memory", result


def test_memory_bomb_step_by_step(sandbox, memory_cap):
    result = run_one(sandbox, "def solution():\n    chunks = []\n    while True:\n        chunks.append(bytearray(2**20))\n")
    assert result.status == "memory", result


def test_memory_bomb_across_processes(sandbox, memory_cap, process_cap):
    """Each process would stay under its address-space cap and together pass the memory cgroup's:
    the first fork is refused."""
    require(sandbox, "cgroup_memory")
    bomb = ("import os, time\ndef solution():\n    children = []\n    for _ in range(8):\n        pid = os.fork()\n"
            "        if pid == 0:\n            x = bytearray(100 * 2**20)\n            for i in range(0, len(x), 4096):\n"
            "                x[i] = 1\n            time.sleep(0.3)\n            os._exit(0)\n        children.append(pid)\n"
            "    ends = [os.waitpid(pid, 0)[1] for pid in children]\n"
            "    return 'killed' if any(os.WIFSIGNALED(e) and os.WTERMSIG(e) == 9 for e in ends) else 'all survived'\n")
    result = run_one(sandbox, bomb)
    assert result.status == "error" and "Operation not permitted" in result.detail, result
    assert_no_strays(sandbox)


# ---- after the bank -----------------------------------------------------------------------
def test_after_the_bank_nothing_is_left_and_normal_programs_verify(sandbox):
    assert_no_strays(sandbox)
    programs = [f"def solution():\n    return {i} * 3\n" for i in range(20)]
    assert [r.value for r in sandbox.run(programs)] == [i * 3 for i in range(20)]
    zombies = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) in _sandbox_pids(sandbox):
            zombies.append(entry)
    assert zombies == []


def _sandbox_pids(sandbox):
    pids = {sandbox._container.proc.pid}
    frontier = list(pids)
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(x) for x in f.read().split()]
        except OSError:
            children = []
        pids.update(children)
        frontier += children
    return pids


def test_close_kills_what_runs_and_leaves_no_files(tmp_path):
    box = Sandbox(lanes=2, limits=LIMITS)
    root = box._root_dir
    container = box._container.proc
    box.close()
    assert container.poll() is not None
    assert not os.path.exists(root)
    with pytest.raises(RuntimeError, match="closed"):
        box.run(["def solution():\n    return 1\n"])



def test_without_a_protection_the_sandbox_refuses_unless_allowed(caplog):
    """isolation none lacks the namespaces: nothing runs unless allow_unprotected, which says so
    loudly and marks the verified records."""
    from mmst_jax.verify.sandbox import SandboxWarning, UnprotectedSandboxError

    with pytest.raises(UnprotectedSandboxError) as refused:
        Sandbox(lanes=1, limits=LIMITS, isolation="none")
    message = str(refused.value)
    assert "MISSING: pid_ns" in message and "run as root" in message and "--allow_unprotected" in message
    with pytest.warns(SandboxWarning, match="UNPROTECTED"):
        box = Sandbox(lanes=1, limits=LIMITS, isolation="none", allow_unprotected=True)
    with box:
        assert box.unprotected
        records = [{"problem_id": 1, "dataset": "gsm8k", "method": "code", "sample_index": 0,
                    "completion": "def solution():\n    return 6 * 7\n", "gold": "#### 42"}]
        [verified] = verify_records(records, sandbox=box)
    assert verified["correct"] and verified["unprotected"] is True
    assert any("UNPROTECTED" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
