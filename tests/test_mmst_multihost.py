"""`mmst run` on two hosts: two real processes joined by jax.distributed on localhost (CPU
collectives), one mesh over both processes' devices, one shared run directory, one round of the
micro configuration (gin_configs/runs/smoke_micro.gin) — the multi-host path of a TPU pod slice.

Each host samples and verifies its shard of the prompts (prompt i goes to host i % 2) and writes its
own part files; one process on the same mesh, from the same checkpoint, samples exactly the union."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from micro_run import MICRO, ROOT

HOSTS, DEVICES_PER_HOST = 2, 2
# A 2x1x2 (data, fsdp, tensor) mesh over 2 processes x 2 CPU devices each.
FLAGS = ["--gin.mmst.run.distributed=True", "--gin.mmst.run.use_mesh_config=True",
         "--gin.partitioning.MeshConfig.shape={'data': 2, 'fsdp': 1, 'tensor': 2}"]
PARTS = [f"part-{h:05d}-of-{HOSTS:05d}.jsonl" for h in range(HOSTS)]
TIMEOUT_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_dir, log, *, devices: int, env_extra: dict, extra_flags=()) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **env_extra}
    for name in ("MMST_FAULTS", "MMST_COORDINATOR", "MMST_NUM_PROCESSES", "MMST_PROCESS_ID"):
        if name not in env_extra:
            env.pop(name, None)
    cmd = [sys.executable, "-m", "mmst_jax", "run", "--quiet", f"--gin_file={MICRO}",
           f"--gin.RUN_DIR='{run_dir}'", *FLAGS, *extra_flags]
    with open(log, "w") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def wait_all(procs: list[subprocess.Popen], logs: list[pathlib.Path], timeout: float) -> list[int]:
    """Waits for every process; one failing (or the time running out) kills them all, since the
    others would wait for it at the next barrier."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        failed = any(p.returncode not in (None, 0) for p in procs)
        if failed or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            tails = "\n".join(f"--- process {i} (exit {p.returncode}):\n{log.read_text()[-2500:]}"
                              for i, (p, log) in enumerate(zip(procs, logs)))
            pytest.fail(f"{'a process failed' if failed else f'not done in {timeout}s'}\n{tails}")
        time.sleep(0.5)
    return [p.returncode for p in procs]


def read(path) -> list[dict]:
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def key(r: dict) -> tuple:
    return (r["dataset"], str(r["problem_id"]), r["method"], r.get("source_method"),
            r.get("source_sample_index"), r["sample_index"])


def shards(directory) -> list[list[dict]]:
    """The two hosts' part files of a directory, which must hold exactly those."""
    directory = pathlib.Path(directory)
    assert sorted(p.name for p in directory.glob("part-*")) == PARTS, directory
    return [read(directory / name) for name in PARTS]


def split_by_prompt(records: list[dict]) -> list[list[dict]]:
    """One process's records (in prompt order) as the hosts hold them: prompt i on host i % 2."""
    prompts = list(dict.fromkeys((r["dataset"], str(r["problem_id"])) for r in records))
    index = {p: i for i, p in enumerate(prompts)}
    return [[r for r in records if index[(r["dataset"], str(r["problem_id"]))] % HOSTS == h]
            for h in range(HOSTS)]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    run_dir, coordinator = tmp / "run", f"127.0.0.1:{free_port()}"
    logs = [tmp / f"host{h}.log" for h in range(HOSTS)]
    procs = [start(run_dir, logs[h], devices=DEVICES_PER_HOST,
                   env_extra={"MMST_COORDINATOR": coordinator, "MMST_NUM_PROCESSES": str(HOSTS),
                              "MMST_PROCESS_ID": str(h)})
             for h in range(HOSTS)]
    assert wait_all(procs, logs, TIMEOUT_S) == [0] * HOSTS
    return run_dir, logs


@pytest.mark.slow
def test_two_hosts_run_one_round_each_sampling_and_verifying_its_shard(two_hosts, tmp_path):
    run_dir, logs = two_hosts
    for stage in ("train", "checkpoint", "eval"):
        assert (run_dir / "round_000" / stage / "_SUCCESS").is_file(), stage
    for stage in ("samples", "verified", "translated", "train", "checkpoint", "eval"):
        assert (run_dir / "round_001" / stage / "_SUCCESS").is_file(), stage
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    for log in logs:  # every host returns the run's metrics, not only the one that wrote them
        assert "(2 rounds)" in log.read_text()
    leftovers = [str(p.relative_to(run_dir)) for p in run_dir.rglob(".*")]
    assert not leftovers, leftovers  # no chunk, partial, temporary or training-state files

    # Every sharded directory: one part per host, every record exactly once, verdicts beside samples.
    pairs = [("round_001/samples/text", "round_001/verified/text"),
             ("round_001/samples/code", "round_001/verified/code")]
    for r in (0, 1):
        for method in ("text", "code"):
            pairs.append((f"round_{r:03d}/eval/samples/greedy_{method}",
                          f"round_{r:03d}/eval/verified/greedy_{method}"))
    for direction in ("text_to_code", "code_to_text"):
        pairs.append((f"round_001/translated/{direction}", f"round_001/translated/{direction}/verified"))
    for samples_dir, verified_dir in pairs:
        samples, verified = shards(run_dir / samples_dir), shards(run_dir / verified_dir)
        keys = [key(x) for part in samples for x in part]
        assert len(keys) == len(set(keys)), f"{samples_dir}: a record on both hosts or twice on one"
        for h in range(HOSTS):
            assert [key(x) for x in verified[h]] == [key(x) for x in samples[h]], (verified_dir, h)
            assert all({"answer", "correct", "status"} <= set(x) for x in verified[h])
        prompts = [len({key(x)[:-1] for x in part}) for part in samples]
        assert prompts[1] <= prompts[0] <= prompts[1] + 1, samples_dir  # every other prompt
    k = 2  # mmst.Generation.num_samples
    for method in ("text", "code"):
        samples = [x for part in shards(run_dir / "round_001" / "samples" / method) for x in part]
        per_problem = {}
        for x in samples:
            per_problem.setdefault((x["dataset"], str(x["problem_id"])), []).append(x["sample_index"])
        assert per_problem and all(sorted(v) == list(range(k)) for v in per_problem.values()), method
        assert metrics["rounds"][1]["verified"][method]["total"] == len(samples)
        greedy = [x for part in shards(run_dir / "round_000" / "eval" / "samples" / f"greedy_{method}")
                  for x in part]
        assert sum(m[method]["n"] for d, m in metrics["rounds"][0]["eval"].items() if d != "all") == len(greedy)

    # One process on the same mesh (4 devices), from the same round-0 checkpoint, samples round 0's
    # evaluation (greedy) and round 1's samples (temperature, 2 a prompt) again: it is killed once
    # those are written, before round 1's samples get their marker (the 2nd marker it writes).
    # The same mesh, because another one (one device) rounds differently: its greedy samples match
    # too, but an occasional temperature sample (1 in ~200) draws another token at a CDF boundary.
    one = tmp_path / "one"
    shutil.copytree(run_dir, one)
    shutil.rmtree(one / "round_000" / "eval")
    shutil.rmtree(one / "round_001")
    log = tmp_path / "one.log"
    proc = start(one, log, devices=HOSTS * DEVICES_PER_HOST, env_extra={"MMST_FAULTS": "stage.done@2=kill"})
    try:
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert not (one / "round_001" / "samples" / "_SUCCESS").exists()
    for d in ("round_000/eval/samples/greedy_text", "round_000/eval/samples/greedy_code",
              "round_001/samples/text", "round_001/samples/code"):
        (name,) = [p.name for p in (one / d).glob("part-*")]
        assert name == "part-00000-of-00001.jsonl"
        reference = read(one / d / name)
        assert reference, d
        # Host h holds exactly the records of prompts h, h + 2, ..., in order, and they are the
        # very samples one process draws: row (i, j) has its own key wherever it runs.
        assert shards(run_dir / d) == split_by_prompt(reference), d


@pytest.mark.slow
def test_an_error_on_one_host_ends_every_host_with_its_message(two_hosts, tmp_path):
    """Host 0 alone checks the run directory's config and refuses a changed one; host 1 would wait
    for it at the next barrier. Both must end within seconds, non-zero, with host 0's message."""
    run_dir, _ = two_hosts
    changed = tmp_path / "run"
    shutil.copytree(run_dir, changed)
    coordinator = f"127.0.0.1:{free_port()}"
    logs = [tmp_path / f"host{h}.log" for h in range(HOSTS)]
    started = time.monotonic()
    procs = [start(changed, logs[h], devices=DEVICES_PER_HOST, extra_flags=["--gin.mmst.Generation.temperature=0.6"],
                   env_extra={"MMST_COORDINATOR": coordinator, "MMST_NUM_PROCESSES": str(HOSTS),
                              "MMST_PROCESS_ID": str(h)})
             for h in range(HOSTS)]
    try:
        codes = [p.wait(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    elapsed = time.monotonic() - started
    assert codes == [1, 1], [log.read_text()[-2000:] for log in logs]
    failed, waiting = logs[0].read_text(), logs[1].read_text()
    assert "mmst run: error:" in failed and "another configuration" in failed, failed[-2000:]
    assert "another host failed: host 0: mmst run: error:" in waiting, waiting[-2000:]
    assert "another configuration" in waiting
    assert elapsed < 60, f"the hosts took {elapsed:.0f}s to stop"  # start-up included; no heartbeat wait
