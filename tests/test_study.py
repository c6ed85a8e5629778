"""`mmst study` end to end on the micro study, and the study's summary, claims and intervals on
reports whose figures are known."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from mmst_jax.mmst import study as study_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MICRO = "gin_configs/runs/study_micro.gin"
T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)


def mmst(*args, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "mmst_jax", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _files(d: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def micro_study(tmp_path_factory):
    directory = tmp_path_factory.mktemp("study") / "s"
    proc = mmst("study", "--quiet", f"--gin_file={MICRO}", "--gin.STUDY_SEEDS=[0, 1]",
                f"--gin.STUDY_DIR='{directory}'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return directory, proc


@pytest.mark.slow
def test_study_runs_every_mode_on_every_seed_and_writes_its_summary(micro_study):
    directory, proc = micro_study
    summary = json.loads((directory / "study.json").read_text())
    modes = ["mmst", "self_training", "cross_only", "mmst_capped"]
    assert summary["seeds"] == [0, 1] and summary["modes"] == modes
    assert summary["runs"] == {m: [0, 1] for m in modes}
    assert [c["name"] for c in summary["claims"]] == [
        "weak_method_gain", "strong_method_gain", "mmst_beats_self_training_weak",
        "mmst_beats_self_training_strong", "capped_mmst_beats_self_training_weak", "related_task_gain"]
    for c in summary["claims"]:
        assert {"name", "holds", "mean", "ci95"} <= set(c) and c["seeds"] == [0, 1], c
        assert c["ci95"] is None or c["ci95"][0] <= c["mean"] <= c["ci95"][1]
    for line in ("weak_method_gain:", "related_task_gain:"):
        assert line in proc.stdout
    # the weak method of each problem dataset: the method that solved fewer of the base model's training problems
    for seed in (0, 1):
        details = json.loads((directory / f"seed_{seed}" / "mmst" / "report" / "details.json").read_text())
        solved = details["rounds"][1]["train_overlap"]
        weak = summary["weak_method"][str(seed)]
        assert set(weak) == {d for d, per in summary["accuracy"]["mmst"].items() if d != "all" and len(per) == 2}
        for dataset, w in weak.items():
            o = solved[dataset]
            text, code = o["both"] + o["only_text"], o["both"] + o["only_code"]
            assert w == {"weak": "text" if text <= code else "code", "strong": "code" if text <= code else "text",
                         "by": "train"}, (seed, dataset, o)
    # accuracy per mode, dataset, method and round, over both seeds, read back from the runs' reports
    for mode in modes:
        for seed in (0, 1):
            metrics = json.loads((directory / f"seed_{seed}" / mode / "report" / "metrics.json").read_text())
            for r in (0, 1):
                got = summary["accuracy"][mode]["synthetic_shopping"]["code"][r]["values"][seed]
                assert got == pytest.approx(100 * metrics["rounds"][r]["eval"]["synthetic_shopping"]["code"]["accuracy"])
    # the related family: text only, never sampled for training
    assert set(summary["accuracy"]["mmst"]["synthetic_compare"]) == {"text"}
    samples = directory / "seed_0" / "mmst" / "round_001" / "samples" / "text" / "part-00000-of-00001.jsonl"
    assert "synthetic_compare" not in samples.read_text()
    assert (directory / "study.html").read_text().count("<tr>") > 20
    details = json.loads((directory / "seed_0" / "mmst" / "report" / "details.json").read_text())
    assert {"oracle", "vote", "choice", "picks", "n"} <= set(details["rounds"][1]["cross"]["synthetic_shopping"])
    assert "train_overlap" in details["rounds"][1]


@pytest.mark.slow
def test_modes_of_a_seed_share_its_base_and_round_one_samples_and_seeds_differ(micro_study):
    directory, _ = micro_study
    for seed in (0, 1):
        first = directory / f"seed_{seed}" / "mmst"
        for mode in ("self_training", "cross_only", "mmst_capped"):
            other = directory / f"seed_{seed}" / mode
            for stage in ("round_000/checkpoint", "round_000/eval", "round_001/samples", "round_001/verified",
                          "round_001/translated"):
                assert _files(first / stage) == _files(other / stage), (mode, stage)
    train = lambda s, m: json.loads((directory / f"seed_{s}" / m / "round_001" / "train" / "_SUCCESS").read_text())  # noqa: E731
    assert train(0, "self_training")["info"]["sources"]["code"]["translation"] == 0
    assert train(0, "cross_only")["info"]["sources"]["code"]["self"] == 0
    questions = lambda s: (directory / f"seed_{s}" / "mmst" / "round_000" / "eval" / "samples"  # noqa: E731
                           / "greedy_code" / "part-00000-of-00001.jsonl").read_text()
    assert questions(0) != questions(1)  # another seed is another world, corpus and model


@pytest.mark.slow
def test_study_resumes_and_its_runs_are_plain_runs(micro_study):
    directory, _ = micro_study
    before = {m: _files(directory / "seed_1" / m) for m in ("mmst", "mmst_capped")}
    # a subset of the seeds: the runs are found finished (the study's settings do not define a run)
    proc = mmst("study", "--quiet", f"--gin_file={MICRO}", "--gin.STUDY_SEEDS=[1]", f"--gin.STUDY_DIR='{directory}'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((directory / "study.json").read_text())["seeds"] == [1]
    # one run of the study is `mmst run` of the same config with its SEED, RUN_DIR and mode
    proc = mmst("run", "--quiet", f"--gin_file={MICRO}", "--gin.SEED=1", "--gin.mmst.ModeConfig.cap_to='self_training'",
                f"--gin.RUN_DIR='{directory / 'seed_1' / 'mmst_capped'}'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {m: _files(directory / "seed_1" / m) for m in ("mmst", "mmst_capped")}
    for m in before:
        changed = {k for k in before[m] if not k.startswith("report/") and before[m][k] != after[m].get(k)}
        assert not changed, (m, sorted(changed)[:5])


# --- the summary on reports with known figures ----------------------------------------------------

DATASETS = ("a", "b")


def _metrics(acc: dict) -> dict:
    """acc: {round: {dataset: {method: percent}}} -> metrics.json."""
    return {"mode": "x", "rounds": [{"round": r, "eval": {d: {m: {"accuracy": v / 100, "maj_at_k": None, "n": 10}
                                                                for m, v in per.items()} for d, per in acc[r].items()},
                                     "verified": {}, "translated": {}, "train_examples": {}}
                                    for r in sorted(acc)]}


def _details(n_rounds: int, solved: dict | None = None) -> dict:
    """solved: {dataset: (text, code)} training problems the base model solved (round 1's samples)."""
    def overlap(text, code):  # of 20 problems both methods sampled, `min` solved by both
        both = min(text, code)
        return {"both": both, "only_text": text - both, "only_code": code - both, "n": 20}
    train = {d: overlap(*tc) for d, tc in (solved or {}).items()}
    return {"mode": "x", "rounds": [{"round": r, "overlap": {}, "cross": {}, "train_overlap": train if r == 1 else {},
                                     "train_sources": {"text": {"self": 5 + r, "translation": r, "replay": 1},
                                                       "code": {"self": 3, "translation": 2 * r, "replay": 1}}}
                                    for r in range(n_rounds)]}


def _write(directory, seed, mode, acc, solved=None):
    report = pathlib.Path(directory) / f"seed_{seed}" / mode / "report"
    report.mkdir(parents=True)
    (report / "metrics.json").write_text(json.dumps(_metrics(acc)))
    (report / "details.json").write_text(json.dumps(_details(len(acc), solved)))


def test_claims_use_the_weak_method_of_each_dataset_and_seed(tmp_path):
    """Round 0: text is weak on `a` (10 vs 50), code on `b` (20 vs 60). Seed s adds s points."""
    base = {"a": {"text": 10, "code": 50}, "b": {"text": 60, "code": 20}, "rel": {"text": 40}}
    seeds = (0, 1, 2)
    for s in seeds:
        _write(tmp_path, s, "mmst", {0: base, 1: {"a": {"text": 30 + s, "code": 52}, "b": {"text": 58, "code": 44 + s},
                                                  "rel": {"text": 45 + s}}})
        _write(tmp_path, s, "self_training", {0: base, 1: {"a": {"text": 15, "code": 50}, "b": {"text": 61, "code": 25},
                                                           "rel": {"text": 40}}})
    study = study_lib.StudyConfig(seeds=seeds, directory=str(tmp_path),
                                  modes={"mmst": {"mode": "mmst"}, "self_training": {"mode": "self_training"}})
    summary = study_lib.write_study(study)
    claims = {c["name"]: c for c in summary["claims"]}
    # weak: a/text 10 -> 30+s (+20+s), b/code 20 -> 44+s (+24+s): mean over datasets 22 + s
    weak = claims["weak_method_gain"]
    assert weak["values"] == pytest.approx([22, 23, 24])
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # sd of (22, 23, 24) is 1
    assert weak["mean"] == pytest.approx(23) and weak["ci95"] == pytest.approx([23 - half, 23 + half])
    assert weak["holds"] is True
    # strong: a/code 50 -> 52 (+2), b/text 60 -> 58 (-2): 0 on every seed, "not worse" holds at 0
    assert claims["strong_method_gain"]["values"] == pytest.approx([0, 0, 0])
    assert claims["strong_method_gain"]["holds"] is True
    # MMST - self-training, weak: a/text (30+s) - 15, b/code (44+s) - 25: 17 + s
    assert claims["mmst_beats_self_training_weak"]["values"] == pytest.approx([17, 18, 19])
    # strong: a/code 52 - 50, b/text 58 - 61: -0.5 each seed, sd 0: the interval is the point
    strong = claims["mmst_beats_self_training_strong"]
    assert strong["values"] == pytest.approx([-0.5] * 3) and strong["holds"] is False
    assert claims["related_task_gain"]["values"] == pytest.approx([5, 6, 7])
    capped = claims["capped_mmst_beats_self_training_weak"]
    assert capped["holds"] is None and "capped" in capped["why_not"]
    sizes = summary["train_examples"]["mmst"]["code"]["translation"]
    assert [x["mean"] for x in sizes] == [0, 2]
    assert summary["accuracy"]["mmst"]["a"]["text"][1]["values"] == pytest.approx([30, 31, 32])
    assert summary["accuracy"]["mmst"]["a"]["text"][1]["sd"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "study.json").read_text()) == json.loads(json.dumps(summary))
    assert "weak_method_gain" in (tmp_path / "study.html").read_text()


def test_the_weak_method_is_chosen_on_training_problems_not_on_the_test_set(tmp_path):
    """Seed 0: the base model solved 4 training problems in text and 12 in code on `a`, yet its
    round-0 test accuracy has text ahead (52 vs 50): the weak method is text, chosen by "train".
    On seed 1, `a` has no training samples (test accuracy decides: code 50 < text 52)."""
    base = {"a": {"text": 52, "code": 50}}
    last = {"a": {"text": 70, "code": 51}}
    _write(tmp_path, 0, "mmst", {0: base, 1: last}, solved={"a": (4, 12)})
    _write(tmp_path, 1, "mmst", {0: base, 1: last})
    summary = study_lib.write_study(study_lib.StudyConfig(seeds=(0, 1), directory=str(tmp_path),
                                                          modes={"mmst": {"mode": "mmst"}}))
    assert summary["weak_method"] == {0: {"a": {"weak": "text", "strong": "code", "by": "train"}},
                                      1: {"a": {"weak": "code", "strong": "text", "by": "test"}}}
    claims = {c["name"]: c for c in summary["claims"]}
    assert claims["weak_method_gain"]["values"] == pytest.approx([18, 1])  # text 52 -> 70; code 50 -> 51
    assert claims["strong_method_gain"]["values"] == pytest.approx([1, 18])
    assert "a text (by train)" in (tmp_path / "study.html").read_text()


def test_a_claim_with_an_interval_across_zero_does_not_hold(tmp_path):
    base = {"a": {"text": 10, "code": 50}}
    for s, gain in zip((0, 1, 2), (30, -10, 12)):
        _write(tmp_path, s, "mmst", {0: base, 1: {"a": {"text": 10 + gain, "code": 50}}})
    summary = study_lib.summarize(study_lib.StudyConfig(seeds=(0, 1, 2), directory=str(tmp_path),
                                                        modes={"mmst": {"mode": "mmst"}}))
    weak = next(c for c in summary["claims"] if c["name"] == "weak_method_gain")
    assert weak["mean"] == pytest.approx(32 / 3) and weak["ci95"][0] < 0 and weak["holds"] is False


def test_bad_study_settings_are_clear_errors():
    with pytest.raises(study_lib.StudyError, match="distinct integers"):
        study_lib.StudyConfig(seeds=(1, 1))
    with pytest.raises(study_lib.StudyError, match="must set 'mode'"):
        study_lib.StudyConfig(modes={"x": {"mode": "star"}})
    with pytest.raises(study_lib.StudyError, match="unknown keys"):
        study_lib.StudyConfig(modes={"x": {"mode": "mmst", "replay": 3}})
    with pytest.raises(study_lib.StudyError, match="cap_to"):
        study_lib.StudyConfig(modes={"x": {"mode": "mmst", "cap_to": "both"}})


@pytest.mark.parametrize("flag", ["--gin.mmst.ModeConfig.mode='self_training'", "--gin.ModeConfig.cap_to='text'",
                                  "--gin.SEED=3", "--gin.RUN_DIR='/tmp/elsewhere'"])
def test_a_flag_the_study_sets_for_each_run_is_refused(flag, tmp_path, capsys):
    import gin

    from mmst_jax import cli

    try:
        code = cli.main(["study", "--gin_file=study_micro.gin", f"--gin.STUDY_DIR='{tmp_path}'", flag])
    finally:
        gin.clear_config()
    err = capsys.readouterr().err
    name = flag[len("--gin."):].split("=")[0]
    assert code == 1 and f"mmst study: error: --gin.{name}: the study sets it for each of its runs" in err, err
    assert not any(tmp_path.iterdir())


def test_study_without_a_seed_macro_is_refused(tmp_path):
    proc = mmst("study", "--gin_file=smoke_micro.gin", f"--gin.mmst.study.directory='{tmp_path}'")
    assert proc.returncode == 1 and "SEED" in proc.stderr
    assert not any(tmp_path.iterdir())
