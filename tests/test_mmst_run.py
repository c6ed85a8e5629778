"""`mmst run` end to end on the micro configuration (gin_configs/runs/smoke_micro.gin): a run killed
anywhere and started again ends as an uninterrupted one; a different config, damaged files and a
crashing verifier are handled."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from micro_run import ROOT, mmst_run, results


def test_uninterrupted_run_layout_and_metrics(micro_reference):
    run = pathlib.Path(micro_reference)
    assert (run / "config.gin").is_file()
    for stage in ("train", "checkpoint", "eval"):
        assert (run / "round_000" / stage / "_SUCCESS").is_file()
    for stage in ("samples", "verified", "translated", "train", "checkpoint", "eval"):
        assert (run / "round_001" / stage / "_SUCCESS").is_file(), stage
    for method in ("text", "code"):
        assert (run / "round_001" / "samples" / method / "part-00000-of-00001.jsonl").is_file()
    assert (run / "round_001" / "checkpoint" / "model" / "config.json").is_file()
    assert not (run / "round_001" / "checkpoint" / ".work").exists()  # training state dropped once done
    recs, metrics, _ = results(run)
    samples = recs["round_001/samples/text/part-00000-of-00001.jsonl"]
    assert {"problem_id", "dataset", "method", "sample_index", "round", "prompt", "completion", "gold",
            "seed"} <= set(samples[0])
    keys = [(r["problem_id"], r["sample_index"]) for r in samples]
    assert len(keys) == len(set(keys)) == 36 * 2  # 6 families x 6 problems, 2 samples each
    verified = recs["round_001/verified/code/part-00000-of-00001.jsonl"]
    assert all({"answer", "correct", "status", "detail"} <= set(r) for r in verified)
    assert metrics["mode"] == "mmst" and [r["round"] for r in metrics["rounds"]] == [0, 1]
    r1 = metrics["rounds"][1]
    assert r1["verified"]["text"]["total"] == 72 and r1["verified"]["code"]["total"] == 72
    assert set(r1["translated"]) == {"text_to_code", "code_to_text"}
    assert sum(r1["train_examples"].values()) >= 24  # at least the replayed records
    for dataset, per in r1["eval"].items():
        for method, m in per.items():
            assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] > 0
    assert (run / "report" / "report.html").is_file()
    # started again: everything is done already, nothing changes
    before = results(run)
    proc = mmst_run(run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert results(run) == before


@pytest.mark.slow
def test_killed_anywhere_then_resumed_matches_uninterrupted(micro_reference, tmp_path):
    run = tmp_path / "killed"
    # Each process is SIGKILLed at one point; the next one resumes. Round 0's evaluation samples 4
    # batches, so the 6th batch is round 1's sampling; fine-tuning saves a checkpoint every 4 steps
    # (asynchronously), so its 4th step is killed while that checkpoint is being written.
    for fault in ("sample.batch@6=kill",        # during sampling (round 1)
                  "verify.record@30=kill",      # during verification
                  "train.step@4=kill",          # during a checkpoint write
                  "train.step@3=kill",          # during fine-tuning
                  "export@1=kill",              # model written, marker not yet
                  "sample.batch@3=kill"):       # during evaluation sampling
        proc = mmst_run(run, faults=fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
    proc = mmst_run(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results(run) == results(micro_reference)


def test_different_config_is_refused_unless_told(micro_reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_reference, run)
    proc = mmst_run(run, "--gin.mmst.Generation.num_samples=3")
    assert proc.returncode != 0
    assert "another configuration" in proc.stderr and "num_samples" in proc.stderr
    assert "--allow_config_change" in proc.stderr
    proc = mmst_run(run, "--gin.mmst.Generation.num_samples=3", "--allow_config_change")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "config.gin.1").read_text() == (micro_reference / "config.gin").read_text()
    assert "num_samples = 3" in (run / "config.gin").read_text()


def test_damaged_files_are_detected_and_redone(micro_reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_reference, run)
    verified = run / "round_001" / "verified" / "text" / "part-00000-of-00001.jsonl"
    text = verified.read_text()
    verified.write_text(text[: len(text) // 2])  # torn
    samples = run / "round_001" / "samples" / "code" / "part-00000-of-00001.jsonl"
    samples.write_text(samples.read_text().replace('"sample_index": 1', '"sample_index": 7', 1))
    summary = run / "round_000" / "eval" / "summary.json"
    summary.write_text("{}")
    proc = mmst_run(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("round_001/verified", "round_001/samples", "round_000/eval"):
        assert f"{name}: corrupt" in proc.stderr, name
    assert results(run) == results(micro_reference)


def test_verifier_crash_is_survived_and_reported(micro_reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_reference, run)
    shutil.rmtree(run / "round_001" / "verified")
    # the verifier fails from its 11th record on, on every restart: the rest of the round is lost
    proc = mmst_run(run, faults="verify.record@11+=crash")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not be verified" in proc.stderr
    recs, metrics, _ = results(run)
    verified = [r for m in ("text", "code") for r in recs[f"round_001/verified/{m}/part-00000-of-00001.jsonl"]]
    lost = [r for r in verified if r.get("lost")]
    assert len(verified) == 144 and len(lost) == 144 - 10
    assert all(r["status"] == "error" and not r["correct"] for r in lost)
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    assert metrics["rounds"][1]["verified"]["text"]["total"] == 72
    details = json.loads((run / "report" / "details.json").read_text())
    assert sum(details["rounds"][1]["lost"]["verified"].values()) == 134
    assert "lost to the verifier" in (run / "report" / "report.html").read_text()


def test_eval_command_on_a_round_checkpoint(micro_reference, tmp_path):
    cmd = [sys.executable, "-m", "mmst_jax", "eval"]
    out = tmp_path / "eval"
    proc = subprocess.run(cmd + ["--model", str(micro_reference / "round_001" / "checkpoint"), "--tasks",
                                 "synthetic_text,synthetic_code", "--limit", "1", "--max_new_tokens", "32",
                                 "--output", str(out), "--quiet", "--gin.tasks.synthetic_world.n_train=4",
                                 "--gin.tasks.synthetic_world.n_test=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["eval"]["all"]["text"]["n"] == 6 and summary["eval"]["all"]["code"]["n"] == 6
    assert summary["overlap"]["all"]["n"] == 6
    assert (out / "verified" / "greedy_synthetic_code" / "part-00000-of-00001.jsonl").is_file()


def test_ablation_reuses_the_main_runs_base_model(micro_reference, tmp_path):
    """`mmst.run.reuse_base_from`: the ablation copies round 0 (tokenizer, base model, its
    evaluation) from the main run instead of training it again, then runs its own mode."""
    run_dir = tmp_path / "ablation"
    proc = mmst_run(run_dir, "--gin.mmst.ModeConfig.mode='self_training'",
                    f"--gin.mmst.run.reuse_base_from='{micro_reference}'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 0: checkpoint" not in proc.stderr  # nothing trained for round 0
    ours, main = results(run_dir), results(micro_reference)
    assert ours[1]["mode"] == "self_training"
    assert ours[1]["rounds"][0] == main[1]["rounds"][0]
    assert (run_dir / "round_000" / "checkpoint" / "tokenizer.json").read_bytes() == \
        (micro_reference / "round_000" / "checkpoint" / "tokenizer.json").read_bytes()
    sources = {r["source"] for r in ours[0]["round_001/train/text/part-00000-of-00001.jsonl"]}
    assert "translation" not in sources
