"""`mmst verify` end to end, the verifier over records, and the sandbox's other isolation modes."""

import json
import os
import signal
import threading
import time
import warnings

import pytest

from mmst_jax.cli.verify import main
from mmst_jax.verify.results import Limits, classify, parse_result_line
from mmst_jax.verify.sandbox import Sandbox

FAST = ["--timeout", "2", "--lanes", "4", "--no-progress"]


def sample(i, method, completion, gold, **extra):
    return {"problem_id": f"p{i}", "dataset": "gsm8k", "method": method, "sample_index": 0,
            "round": 0, "prompt": "Q", "completion": completion, "gold": gold, "seed": 7, **extra}


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def samples(tmp_path):
    records = []
    for i in range(12):
        records.append(sample(i, "text", f"Half of {2 * i} is {i}. The answer is {i}.", f"...\n#### {i}"))
        body = "    while True:\n        pass\n" if i == 5 else f"    return {i} + {i % 2}\n"
        records.append(sample(i, "code", f"def solution():\n{body}", f"...\n#### {i}"))
    records.append(sample(99, "text", "I do not know.", "#### 3"))
    return write(tmp_path / "samples.jsonl", records)


def test_verify_writes_verified_records_in_input_order(samples, tmp_path, capsys):
    out = tmp_path / "out" / "verified.jsonl"
    assert main(["--input", str(samples), "--output", str(out), *FAST]) == 0
    got, given = read(out), read(samples)
    assert [(r["problem_id"], r["method"]) for r in got] == [(r["problem_id"], r["method"]) for r in given]
    for v, s in zip(got, given):
        assert {k: v[k] for k in s} == s  # every sample field kept
        assert set(v) - set(s) == {"answer", "correct", "status", "detail", "elapsed_ms", "copied"}
    code = {r["problem_id"]: r for r in got if r["method"] == "code"}
    assert code["p4"]["status"] == "ok" and code["p4"]["correct"] and code["p4"]["answer"] == "4"
    assert code["p3"]["answer"] == "4" and not code["p3"]["correct"]
    assert code["p5"]["status"] == "timeout" and not code["p5"]["correct"]
    text = [r for r in got if r["method"] == "text"]
    assert all(r["correct"] for r in text[:-1])
    assert text[-1]["status"] == "no_answer" and text[-1]["answer"] is None
    err = capsys.readouterr().err
    assert "text: 12/13 correct" in err and "code: 6/12 correct" in err and "sandbox mode" in err
    assert not (out.parent / "verified.jsonl.partial").exists()


def test_a_rerun_after_a_crash_verifies_only_what_is_missing(samples, tmp_path, capsys):
    out = tmp_path / "verified.jsonl"
    assert main(["--input", str(samples), "--output", str(out), *FAST]) == 0
    full = read(out)
    # a crash: the output never written, the progress log torn in the middle of a line
    partial = tmp_path / "verified.jsonl.partial"
    kept = [r for r in full if r["problem_id"] != "p5"]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept[:10]) + json.dumps(kept[10])[:40])
    out.unlink()
    capsys.readouterr()
    assert main(["--input", str(samples), "--output", str(out), *FAST]) == 0
    assert "(10 reused from an earlier run)" in capsys.readouterr().err
    again = read(out)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_ms"} for r in rs]  # noqa: E731
    assert strip(again) == strip(full)
    assert not partial.exists()
    # and with the output complete, nothing is verified again
    assert main(["--input", str(samples), "--output", str(out), *FAST]) == 0
    assert f"({len(full)} reused from an earlier run)" in capsys.readouterr().err


def test_changed_completions_are_verified_again(samples, tmp_path):
    out = tmp_path / "verified.jsonl"
    assert main(["--input", str(samples), "--output", str(out), *FAST]) == 0
    records = read(samples)
    records[1]["completion"] = "def solution():\n    return 'nothing'\n"
    write(samples, records)
    assert main(["--input", str(samples), "--output", str(out), *FAST]) == 0
    changed = read(out)[1]
    assert changed["status"] == "no_answer" and "'nothing'" in changed["detail"]


@pytest.mark.parametrize("line, message", [
    ("{not json", "bad.jsonl:2: not valid JSON"),
    (json.dumps({"problem_id": 1}), "bad.jsonl:2: missing field(s) dataset, method"),
    (json.dumps(sample(1, "latin", "x", "#### 1")), "bad.jsonl:2: method must be one of text, code"),
    (json.dumps(sample(1, "code", 5, "#### 1")), "bad.jsonl:2: completion must be a string"),
    (json.dumps(sample(1, "text", "x", "#### many")), "bad.jsonl:2: gold '#### many' has no number answer"),
])
def test_malformed_records_are_named_by_file_and_line(tmp_path, capsys, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(sample(0, "text", "The answer is 1.", "#### 1")) + "\n" + line + "\n")
    assert main(["--input", str(bad), "--output", str(tmp_path / "o.jsonl"), *FAST]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_directory_of_parts_is_read_in_name_order(tmp_path):
    parts = tmp_path / "samples"
    parts.mkdir()
    write(parts / "part-00001-of-00002.jsonl", [sample(1, "text", "The answer is 2.", "#### 2")])
    write(parts / "part-00000-of-00002.jsonl", [sample(0, "text", "The answer is 1.", "#### 1")])
    out = tmp_path / "verified.jsonl"
    assert main(["--input", str(parts), "--output", str(out), *FAST]) == 0
    assert [(r["problem_id"], r["correct"]) for r in read(out)] == [("p0", True), ("p1", True)]


def test_repeated_samples_and_missing_files_are_errors(tmp_path, capsys):
    one = write(tmp_path / "a.jsonl", [sample(0, "text", "The answer is 1.", "#### 1")])
    assert main(["--input", str(one), "--input", str(one), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "repeats sample" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_result_channel_parsing_is_strict():
    assert parse_result_line(b'{"value": 3}\n') == {"value": 3}
    assert parse_result_line(b'{"value": [1, 2.5, "a"]}\n') == {"value": [1, 2.5, "a"]}
    for raw, why in [(b'{"value": true}\n', "bool"), (b'{"value": Infinity}\n', "not a number"),
                     (b'{"value": {"a": 1}}\n', "dict"), (b'{"value": [[1]]}\n', "list"),
                     (b'{"value": 1, "correct": true}\n', "malformed"), (b"\x80\x03}\n", "malformed"),
                     (b'{"value": 1}', "exactly one line"), (b"1" * 20000 + b"\n", "over")]:
        assert why in parse_result_line(raw)["rejected"], raw
    assert classify({"killed": None, "exit": 0}).status == "error"
    assert classify({"killed": None, "signal": 9, "cpu_s": 3.0, "cpu_limit": 2}).status == "timeout"
    assert classify({"killed": None, "signal": 9, "oom": True}).status == "memory"


@pytest.mark.parametrize("isolation", ["userns", "none"])
def test_other_isolation_modes_run_programs_and_say_what_they_lack(isolation):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Sandbox(lanes=2, limits=Limits(timeout_s=2.0), isolation=isolation,
                     allow_unprotected=True) as box:
            results = box.run(["def solution():\n    return 6 * 7\n",
                               "def solution():\n    while True:\n        pass\n",
                               "def solution():\n    return 1 / 0\n"])
            prot = box.protections
            # a child that leaves the process group: refused by seccomp, else still killed by
            # the PID namespace, or without one by the lane's pids cgroup
            escape = ("import os, time\ndef solution():\n    if os.fork() == 0:\n        os.setsid()\n"
                      "        time.sleep(30)\n    return 1\n")
            [escaped] = box.run([escape])
            if prot.seccomp:
                assert escaped.status == "error" and "Operation not permitted" in escaped.detail, escaped
            else:
                assert escaped.value == 1, escaped
            escaped_cleanly = box.stray_processes() == []
    assert [r.status for r in results] == ["ok", "timeout", "error"]
    assert results[0].value == 42
    if isolation == "none":
        assert prot.missing() and not prot.pid_ns and not prot.private_root and box.unprotected
        assert any("UNPROTECTED" in str(w.message) for w in caught)
        assert prot.cgroup_pids == escaped_cleanly or not prot.cgroup_pids
    elif prot.user_ns:
        assert prot.pid_ns and prot.private_root and prot.caps_dropped and not prot.setuid


def test_verify_files_returns_counts(samples, tmp_path):
    from mmst_jax.verify.files import verify_files

    summary = verify_files([str(samples)], str(tmp_path / "v.jsonl"), limits=Limits(timeout_s=1.0), lanes=2)
    assert summary["records"] == 25 and summary["reused"] == 0
    assert summary["correct"] == {"text": 12, "code": 6} and summary["total"] == {"text": 13, "code": 12}
    assert summary["unprotected"] is False and summary["copied"] == {"text": 0, "code": 0}
    assert summary["status"] == {"no_answer": 1, "ok": 23, "timeout": 1}


def _lane_pids(box):
    pid = box._container.proc.pid
    for _ in range(2 if box.protections.user_ns else 1):  # in userns mode the worker is a grandchild
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        pid = children[0]
    return children


def test_dead_lanes_are_replaced_and_at_most_their_running_programs_fail():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Sandbox(lanes=2, limits=Limits(timeout_s=5.0)) as box:
            box.run(["def solution():\n    return 0\n"])
            for pid in _lane_pids(box):  # idle lanes die: nothing is lost
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            results = box.run([f"def solution():\n    return {i}\n" for i in range(6)])
            assert [r.value for r in results] == list(range(6))
            # lanes die while two slow programs run: those two fail, the rest run on new lanes
            slow = "import time\ndef solution():\n    time.sleep(2)\n    return 'slow'\n"
            lanes = _lane_pids(box)
            killer = threading.Timer(0.4, lambda: [os.kill(p, signal.SIGKILL) for p in lanes])
            killer.start()
            results = box.run([slow, slow] + [f"def solution():\n    return {i}\n" for i in range(4)])
            killer.join()
            # the program whose lane is found dead fails; the others in flight run again
            failed = [r for r in results if r.status != "ok"]
            assert 1 <= len(failed) <= 2 and all("lane died" in r.detail for r in failed)
            assert all(r.value == "slow" for r in results[:2] if r.status == "ok")
            assert [r.value for r in results[2:]] == list(range(4))
            deadline = time.monotonic() + 5.0
            while box.stray_processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert box.stray_processes() == []


def test_a_program_that_outlives_its_lane_is_killed_with_the_old_worker():
    """It resets its parent-death signal, then its lane is killed: the worker that is replaced
    kills what is left in its lanes' cgroups."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = Sandbox(lanes=1, limits=Limits(timeout_s=30.0))
    try:
        if not (box.protections.cgroup_pids and box.protections.setuid):
            pytest.skip(f"needs a pids cgroup and per-lane uids: {box.protections.describe()}")
        box.run(["def solution():\n    return 0\n"])
        lanes = _lane_pids(box)
        killer = threading.Timer(0.5, lambda: [os.kill(p, signal.SIGKILL) for p in lanes])
        killer.start()
        escape = "import ctypes, time\ndef solution():\n    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\n    time.sleep(3600)\n"
        [result] = box.run([escape])
        killer.join()
        assert result.status == "error" and "lane died" in result.detail
        uids = box.program_uids
    finally:
        box.close()
    deadline = time.monotonic() + 5.0
    while _alive_with_uid(uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_with_uid(uids) == []


def _alive_with_uid(uids):
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) in uids and not fields["State"].strip().startswith("Z"):
            alive.append(int(pid))
    return alive



def test_the_verifier_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys\nimport mmst_jax.cli.verify, mmst_jax.verify.vote\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_verify_refuses_to_run_code_unprotected_unless_allowed(samples, tmp_path, capsys):
    out = tmp_path / "verified.jsonl"
    assert main(["--input", str(samples), "--output", str(out), "--isolation", "none", *FAST]) == 2
    err = capsys.readouterr().err
    assert "will not run model-written code" in err and "MISSING: pid_ns" in err and "--allow_unprotected" in err
    assert not out.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--input", str(samples), "--output", str(out), "--isolation", "none",
                     "--allow_unprotected", *FAST]) == 0
    assert "WITHOUT every protection" in capsys.readouterr().err
    got = read(out)
    assert all(r["unprotected"] is True for r in got if r["method"] == "code")
    assert not any("unprotected" in r for r in got if r["method"] == "text")
