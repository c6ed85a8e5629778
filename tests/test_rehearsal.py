"""Every experiment config rehearsed to the end of round 1 (gin_configs/rehearsal.gin): the
experiment's own code path — HF loading, its model policy and micro-batches, its datasets, every
stage, fine-tuning on known correct solutions, the export of the fine-tuned model and its reload
for evaluation — on a tiny random BLOOM and 8 simulated CPU devices; and a configuration that would
fail later is refused before anything is sampled."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from mmst_jax.mmst import rundir

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "gin_configs" / "experiments").glob("*.gin")
                     if "include 'topologies/" in p.read_text())
TIMEOUT_S = 900
# The study of the paper's tables runs this experiment; its rehearsal (through `mmst study`) is its own.
STUDY, STUDIED = "study_bloom-176b", "bloom-176b_v4-512"


def rehearse(experiment: str, run_dir, checkpoint, data_dir, *flags, env_extra=None, wait=True, command="run"):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "MMST_COORDINATOR", "MMST_NUM_PROCESSES", "MMST_PROCESS_ID")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})})
    where = f"--gin.RUN_DIR='{run_dir}'" if command == "run" else f"--gin.STUDY_DIR='{run_dir}'"
    cmd = [sys.executable, "-m", "mmst_jax", command, "--quiet", f"--gin_file=experiments/{experiment}.gin",
           "--gin_file=rehearsal.gin", f"--gin.HF_CHECKPOINT='{checkpoint}'", where,
           f"--gin.DATA_DIR='{data_dir}'", *flags]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def check_round_1(run_dir: pathlib.Path) -> dict:
    """Every stage of rounds 0 and 1 finished with a valid marker; round 1 fine-tuned on both
    methods, exported an orbax model, and evaluated it; the report is written."""
    run = rundir.RunDir(str(run_dir))
    for r, names in ((0, ("checkpoint", "eval")),
                     (1, ("samples", "verified", "translated", "train", "checkpoint", "eval"))):
        for name in names:
            state = rundir.stage_state(run.stage(r, name))
            assert state.done, f"round {r} {name}: {state.reason}"
    train = rundir.stage_state(run.stage(1, "train")).marker["info"]
    assert train["train_examples"]["text"] > 0 and train["train_examples"]["code"] > 0, train
    model = run_dir / "round_001" / "checkpoint" / "model"
    assert (model / "config.json").exists() and (model / "params").is_dir()
    assert rundir.model_path(run.stage(1, "checkpoint")).endswith("round_001/checkpoint/model")
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    assert (run_dir / "report" / "report.html").exists()
    assert (run_dir / "round_001" / "eval" / "summary.json").exists()
    return metrics


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != STUDIED])
def test_experiment_rehearsed_to_the_end_of_round_1(experiment, tmp_path, tiny_hf_checkpoint, data_dir):
    result = rehearse(experiment, tmp_path / "run", tiny_hf_checkpoint, data_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    check_round_1(tmp_path / "run")
    assert "ERROR" not in result.stderr, result.stderr[-4000:]


def test_study_experiment_rehearsed_through_mmst_study(tmp_path, tiny_hf_checkpoint, data_dir):
    """experiments/study_bloom-176b.gin (which runs bloom-176b_v4-512) as `mmst study` runs it:
    one seed, the main mode and the size-matched control sharing its base model and round 1
    samples, then study.json."""
    modes = "{'mmst': {'mode': 'mmst'}, 'mmst_capped': {'mode': 'mmst', 'cap_to': 'self_training'}}"
    result = rehearse(STUDY, tmp_path / "study", tiny_hf_checkpoint, data_dir, "--gin.STUDY_SEEDS=[0]",
                      f"--gin.mmst.study.modes={modes}",
                      # the plain rehearsals decode in full; here fewer steps, for the study's own path
                      "--gin.mmst.Generation.max_new_tokens=8", "--gin.mmst.Generation.vote_samples=0",
                      "--gin.mmst.RunConfig.eval_problems=2", command="study")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ERROR" not in result.stderr, result.stderr[-4000:]
    for mode in ("mmst", "mmst_capped"):
        check_round_1(tmp_path / "study" / "seed_0" / mode)
    assert "reusing the round 1 samples" in result.stderr
    summary = json.loads((tmp_path / "study" / "study.json").read_text())
    assert summary["runs"] == {"mmst": [0], "mmst_capped": [0]}
    assert {"strategyqa", "commonsenseqa"} <= set(summary["accuracy"]["mmst"])
    claims = {c["name"]: c for c in summary["claims"]}
    assert claims["weak_method_gain"]["values"] and claims["weak_method_gain"]["ci95"] is None  # one seed
    assert claims["mmst_beats_self_training_weak"]["holds"] is None  # no self-training mode here


@pytest.mark.parametrize("flag, message", [
    ("--gin.TrainConfig.micro_batches=32", "finetune/TrainConfig: batch_size 64 in 32 micro-batches gives 2 rows"),
    ("--gin.mmst.Generation.max_cache_length=64", "mmst.Generation.max_cache_length is 64"),
])
def test_a_config_that_would_fail_later_is_refused_before_any_sample(flag, message, tmp_path, tiny_hf_checkpoint,
                                                                     data_dir):
    result = rehearse(EXPERIMENTS[0], tmp_path / "run", tiny_hf_checkpoint, data_dir, flag)
    assert result.returncode == 1, result.stderr[-3000:]
    assert message in result.stderr
    assert not list((tmp_path / "run").glob("round_*/*/samples")) and not (tmp_path / "run" / "round_001").exists()


def test_a_tokenizer_larger_than_the_vocabulary_is_refused_before_anything(tmp_path, tiny_hf_checkpoint, data_dir):
    small = tmp_path / "small_vocab"
    small.mkdir()
    config = json.loads((tiny_hf_checkpoint / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "vocab_size": 512}))
    (small / "tokenizer.json").write_text((tiny_hf_checkpoint / "tokenizer.json").read_text())
    result = rehearse(EXPERIMENTS[0], tmp_path / "run", small, data_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "has 1024 tokens but the model's vocabulary has 512" in result.stderr
    assert not (tmp_path / "run" / "round_000" / "eval").exists()


@pytest.mark.slow
def test_experiment_rehearsed_on_two_hosts(tmp_path, tiny_hf_checkpoint, data_dir):
    """The first experiment on 2 processes (jax.distributed on localhost) with 4 simulated
    devices each: the same 8-device mesh spanning both hosts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [rehearse(EXPERIMENTS[0], tmp_path / "run", tiny_hf_checkpoint, data_dir,
                      "--gin.mmst.run.distributed=True", "--gin.mmst.run.simulated_devices=4",
                      # fewer decode steps: every step is a collective across the two processes
                      "--gin.mmst.Generation.max_new_tokens=8", "--gin.mmst.Generation.vote_samples=0",
                      "--gin.mmst.RunConfig.eval_problems=1", wait=False,
                      env_extra={"MMST_COORDINATOR": f"127.0.0.1:{port}", "MMST_NUM_PROCESSES": "2",
                                 "MMST_PROCESS_ID": str(i)})
             for i in range(2)]
    errors = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        errors.append(err)
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(e[-3000:] for e in errors)
    check_round_1(tmp_path / "run")
    for name in ("text", "code"):
        parts = sorted(p.name for p in (tmp_path / "run" / "round_001" / "samples" / name).glob("part-*"))
        assert parts == [f"part-0000{h}-of-00002{kind}.jsonl" for h in range(2) for kind in ("", ".known")]
