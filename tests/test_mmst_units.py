"""MMST pieces on their own: run directory markers, the config check, modes, metrics, the
report."""

import json
import os

import pytest

from mmst_jax.mmst import metrics, modes, report, rundir
from mmst_jax import faults
from mmst_jax import records as records_lib


# --------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------
def _stage(tmp_path, records=({"a": 1}, {"a": 2})):
    d = tmp_path / "round_001" / "verified"
    records_lib.write_jsonl(d / "text" / records_lib.part_name(0, 1), records)
    return d


def test_marker_detects_damage_and_stale_inputs(tmp_path):
    d = _stage(tmp_path)
    assert rundir.stage_state(d).reason == "missing"
    marker = rundir.mark_done(d, inputs="in-1", info={"n": 2})
    assert rundir.stage_state(d, "in-1").done
    assert rundir.stage_state(d, "in-2").reason.startswith("stale")
    part = d / "text" / records_lib.part_name(0, 1)
    text = part.read_text()
    part.write_text(text.replace('"a": 2', '"a": 3'))  # same size, other content
    assert rundir.stage_state(d, "in-1").reason.startswith("corrupt")
    part.write_text(text[:-3])
    assert "bytes" in rundir.stage_state(d, "in-1").reason
    part.unlink()
    assert "missing" in rundir.stage_state(d, "in-1").reason
    part.write_text(text)
    assert rundir.stage_state(d, "in-1").digest == marker["digest"]
    (d / rundir.MARKER).write_text((d / rundir.MARKER).read_text().replace('"n": 2', '"n": 5'))
    assert rundir.stage_state(d).reason.startswith("corrupt")


def test_digest_ignores_verifier_timings(tmp_path):
    a = rundir.mark_done(_stage(tmp_path / "a", [{"x": 1, "elapsed_ms": 3.0}]), "in")
    b = rundir.mark_done(_stage(tmp_path / "b", [{"x": 1, "elapsed_ms": 9.5}]), "in")
    c = rundir.mark_done(_stage(tmp_path / "c", [{"x": 2, "elapsed_ms": 3.0}]), "in")
    assert a["digest"] == b["digest"] != c["digest"]


def test_hidden_and_temporary_files_are_not_part_of_a_stage(tmp_path):
    d = _stage(tmp_path)
    (d / ".work").mkdir()
    (d / ".work" / "state").write_text("x")
    (d / ".part.tmp-1").write_text("half")
    marker = rundir.mark_done(d, "in")
    assert list(marker["files"]) == ["text/part-00000-of-00001.jsonl"]


def test_read_jsonl_names_the_damaged_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(records_lib.RecordError, match="x.jsonl:2"):
        records_lib.read_jsonl(p)


def test_config_check(tmp_path):
    rd = rundir.RunDir(tmp_path / "run")
    assert rd.check_config("RUN_DIR = 'a'\nx.y = 1\n") == "new"
    assert rd.check_config("# comment\nRUN_DIR = 'b'\n\nx.y = 1\n") == "same"
    with pytest.raises(rundir.ConfigMismatchError, match=r"x.y = 1.*x.y = 2.*--allow_config_change"):
        rd.check_config("x.y = 2\n")
    assert rd.check_config("x.y = 2\n", allow_change=True) == "changed"
    assert (tmp_path / "run" / "config.gin.1").read_text() == "RUN_DIR = 'a'\nx.y = 1\n"
    assert rd.check_config("x.y = 2\n") == "same"
    # the study a run belongs to does not define it (mmst study runs a subset of its seeds again)
    study = ("STUDY_SEEDS = [0, 1]\nx.y = 2\nstudy.modes = \\\n    {'mmst': {'mode': 'mmst'},\n"
             "     'st': {'mode': 'self_training'}}\n")
    assert rd.check_config(study) == "same"
    assert rd.check_config(study.replace("[0, 1]", "[1]").replace("'st'", "'self'")) == "same"


def test_faults_spec(monkeypatch):
    monkeypatch.setenv(faults.ENV, "p@2=crash,q@1+=crash")
    faults._counts.clear()
    faults.point("p")
    with pytest.raises(faults.InjectedFault):
        faults.point("p")
    faults.point("p")
    for _ in range(3):
        with pytest.raises(faults.InjectedFault):
            faults.point("q")
    monkeypatch.setenv(faults.ENV, "p@x=kill")
    with pytest.raises(ValueError, match="NAME@N"):
        faults.point("p")
    faults._counts.clear()


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------
def _v(pid, method, i, correct=True, completion=None, **extra):
    return {"problem_id": pid, "dataset": "d", "method": method, "sample_index": i, "round": 1,
            "prompt": f"P {pid} {method}", "completion": completion or f"{method} {pid} {i}", "gold": "1",
            "seed": 0, "correct": correct, **extra}


VERIFIED = [_v("p1", "text", 0), _v("p1", "text", 1, completion="text p1 0"), _v("p1", "text", 2, False),
            _v("p2", "code", 0), _v("p2", "code", 1), _v("p2", "code", 2), _v("p3", "code", 0)]
TRANSLATED = [_v("p2", "text", 0, train_prompt="P p2 text", source_sample_index=0),
              _v("p3", "text", 0, correct=False, train_prompt="P p3 text", source_sample_index=0),
              _v("p1", "code", 0, train_prompt="P p1 code", source_sample_index=0)]


def test_modes_mixtures():
    mmst = modes.build(modes.ModeConfig("mmst", max_per_problem=2), VERIFIED, TRANSLATED)
    # text: p1 once (duplicate completion and the wrong sample dropped) + the translation of p2
    assert [(r["problem_id"], r["source"]) for r in mmst["text"]] == [("p1", "self"), ("p2", "translation")]
    assert mmst["text"][1]["prompt"] == "P p2 text"  # the target method's own prompt
    # code: p2 capped at max_per_problem=2, p3, and the translation of p1
    assert [(r["problem_id"], r["source"]) for r in mmst["code"]] == [
        ("p2", "self"), ("p2", "self"), ("p3", "self"), ("p1", "translation")]
    cross = modes.build(modes.ModeConfig("cross_only"), VERIFIED, TRANSLATED)
    assert modes.counts(cross) == {"text": 1, "code": 1}
    own = modes.build(modes.ModeConfig("self_training"), VERIFIED, TRANSLATED)
    assert modes.counts(own) == {"text": 1, "code": 3}
    capped = modes.build(modes.ModeConfig("mmst", cap_to="self_training"), VERIFIED, TRANSLATED)
    assert modes.counts(capped) == {"text": 1, "code": 3}
    assert modes.build(modes.ModeConfig("mmst", cap_to="self_training"), VERIFIED, TRANSLATED) == capped


def test_mode_errors():
    with pytest.raises(ValueError, match="unknown mode"):
        modes.ModeConfig("star")
    with pytest.raises(ValueError, match="finetune_from"):
        modes.ModeConfig(finetune_from="last")


def test_replay_is_seeded_and_split_by_method():
    base = [_v(f"b{i}", "text" if i % 2 else "code", 0) for i in range(10)]
    a = modes.replay_records(base, 4, seed=1)
    assert sum(map(len, a.values())) == 4 and a == modes.replay_records(base, 4, seed=1)
    assert all(r["source"] == "replay" for rs in a.values() for r in rs)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def _e(dataset, pid, method, correct, i=0, answer=None):
    return {"dataset": dataset, "problem_id": pid, "method": method, "sample_index": i, "correct": correct,
            "answer": answer, "gold": "1"}


def test_accuracy_majority_and_overlap():
    greedy = [_e("a", "1", "text", True), _e("a", "1", "code", True), _e("a", "2", "text", True),
              _e("a", "2", "code", False), _e("a", "3", "text", False), _e("a", "3", "code", True),
              _e("a", "4", "text", False), _e("a", "4", "code", False), _e("b", "1", "text", True),
              _e("b", "1", "code", False)]
    vote = [_e("a", "1", "text", True, 0, "1"), _e("a", "1", "text", False, 1, "2"),
            _e("a", "1", "text", True, 2, "1"), _e("a", "2", "text", False, 0, "5")]
    acc = metrics.accuracy(greedy, vote)
    assert acc["a"]["text"] == {"accuracy": 0.5, "maj_at_k": 0.5, "n": 4}
    assert acc["a"]["code"] == {"accuracy": 0.5, "maj_at_k": None, "n": 4}
    assert acc["all"]["text"]["n"] == 5 and acc["all"]["text"]["accuracy"] == 0.6
    ov = metrics.overlap(greedy)
    assert {k: ov["a"][k] for k in ("both", "only_text", "only_code", "neither", "n")} == {
        "both": 1, "only_text": 1, "only_code": 1, "neither": 1, "n": 4}
    assert ov["a"]["correlation"] == 0.0
    assert ov["b"]["correlation"] is None  # one problem: no variance


def test_overlap_on_training_samples_counts_a_problem_solved_by_any_sample():
    samples = [_e("a", "1", "text", False, 0), _e("a", "1", "text", True, 1), _e("a", "1", "code", False, 0),
               _e("a", "2", "text", False, 0), _e("a", "2", "code", True, 0), _e("a", "2", "code", True, 1)]
    first = metrics.overlap(samples)["a"]
    anyone = metrics.overlap(samples, any_sample=True)["a"]
    assert (first["only_text"], first["only_code"], first["neither"]) == (0, 1, 1)
    assert (anyone["only_text"], anyone["only_code"], anyone["neither"]) == (1, 1, 0)
    assert anyone["correlation"] == -1.0


def test_cross_method_oracle_vote_and_choice():
    greedy = [_e("a", "1", "text", True, 0, "7"), _e("a", "1", "code", False, 0, "8"),   # text right
              _e("a", "2", "text", False, 0, "1"), _e("a", "2", "code", True, 0, "9"),   # code right
              _e("a", "3", "text", False, 0, "1"), _e("a", "3", "code", False, 0, "2")]  # neither
    for r, gold in zip(greedy, "779955"):
        r["gold"] = gold
    out = metrics.cross_method(greedy)["a"]
    assert out["oracle"] == pytest.approx(2 / 3) and out["n"] == 3
    # one sample each: every problem ties on consistency and on the pooled vote; without a prior
    # the tie goes to text, and the choice to the method that agrees with the vote
    assert out["vote"] == pytest.approx(1 / 3) and out["choice"] == pytest.approx(1 / 3)
    assert out["picks"] == {"text": 1.0, "code": 0.0}
    # with code the more accurate on the training samples, ties go to code: right on problem 2 only
    out = metrics.cross_method(greedy, prior={"a": {"text": 0.2, "code": 0.6}})["a"]
    assert out["vote"] == pytest.approx(1 / 3) and out["picks"] == {"text": 0.0, "code": 1.0}
    assert metrics.cross_method(greedy[2:4], prior={"a": {"code": 0.6}})["a"]["vote"] == 1.0
    # vote samples: code is unanimous on problem 2, text split; the pooled vote and the choice follow code
    vote = [_e("a", "2", "text", False, i, a) for i, a in enumerate("13")] + \
           [_e("a", "2", "code", True, i, "9") for i in range(2)]
    for r in vote:
        r["gold"] = "9"
    out = metrics.cross_method([g for g in greedy if g["problem_id"] == "2"], vote)["a"]
    assert out == {"oracle": 1.0, "vote": 1.0, "choice": 1.0, "picks": {"text": 0.0, "code": 1.0}, "n": 1}


def test_phi():
    assert metrics.phi([(True, True), (False, False)]) == 1.0
    assert metrics.phi([(True, False), (False, True)]) == -1.0
    assert metrics.phi([]) is None


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _fake_round(rd, r, acc_text, acc_code):
    ev = {"eval": {"all": {"text": {"accuracy": acc_text, "maj_at_k": None, "n": 10},
                           "code": {"accuracy": acc_code, "maj_at_k": 0.5, "n": 10}}},
          "overlap": {"all": {"both": 2, "only_text": 3, "only_code": 1, "neither": 4, "n": 10,
                              "correlation": -0.1}}, "lost": 0}
    records_lib.write_json(rd.stage(r, "eval") / "summary.json", ev)
    rundir.mark_done(rd.stage(r, "eval"), "x", ev)
    if r:
        rundir.mark_done(rd.stage(r, "verified"), "x",
                         {"verified": {"text": {"correct": 5, "total": 9, "lost": 1},
                                       "code": {"correct": 4, "total": 9, "lost": 0}}})
        rundir.mark_done(rd.stage(r, "translated"), "x",
                         {"translated": {"text_to_code": {"kept": 3, "total": 5},
                                         "code_to_text": {"kept": 2, "total": 4}}, "lost": {}})
        rundir.mark_done(rd.stage(r, "train"), "x", {"train_examples": {"text": 7, "code": 8}})


def test_report_metrics_schema_html_and_plots(tmp_path):
    rd = rundir.RunDir(tmp_path / "run")
    rd.check_config("mmst.RunConfig.rounds = 1\n")
    _fake_round(rd, 0, 0.1, 0.3)
    _fake_round(rd, 1, 0.4, 0.35)
    metrics = report.write_report(rd, "mmst")
    saved = json.loads((rd.report / "metrics.json").read_text())
    assert saved == metrics
    assert set(saved) == {"mode", "rounds"} and saved["mode"] == "mmst"
    r0, r1 = saved["rounds"]
    assert set(r1) == {"round", "eval", "verified", "translated", "train_examples"}
    assert r0["round"] == 0 and r0["verified"] == {} and r0["translated"] == {}
    assert r1["verified"] == {"text": {"correct": 5, "total": 9}, "code": {"correct": 4, "total": 9}}
    assert r1["translated"]["text_to_code"] == {"kept": 3, "total": 5}
    assert r1["eval"]["all"]["code"] == {"accuracy": 0.35, "maj_at_k": 0.5, "n": 10}
    details = json.loads((rd.report / "details.json").read_text())
    assert details["rounds"][1]["lost"]["verified"] == {"text": 1, "code": 0}
    html = (rd.report / "report.html").read_text()
    assert "mmst.RunConfig.rounds = 1" in html and "accuracy.png" in html and "overlap.png" in html
    for png in ("accuracy.png", "overlap.png"):
        assert (rd.report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(rd.report / "tensorboard"))


def test_report_counts_copied_answers_kept_out_per_round_and_source(tmp_path):
    rd = rundir.RunDir(tmp_path / "run")
    rd.check_config("mmst.RunConfig.rounds = 1\n")
    _fake_round(rd, 0, 0.1, 0.3)
    _fake_round(rd, 1, 0.4, 0.35)
    rec = lambda method, copied, correct=True, **extra: {  # noqa: E731
        "problem_id": "1", "dataset": "a", "method": method, "correct": correct, "copied": copied, **extra}
    records_lib.write_jsonl(rd.stage(1, "verified") / "code" / "part-00000-of-00001.jsonl",
                            [rec("code", True), rec("code", True), rec("code", True, correct=False),
                             rec("code", False, unprotected=True)])
    records_lib.write_jsonl(rd.stage(1, "translated") / "code_to_text" / "verified" / "part-00000-of-00001.jsonl",
                            [rec("text", True), rec("text", False)])
    report.write_report(rd, "mmst")
    details = json.loads((rd.report / "details.json").read_text())
    assert details["rounds"][0]["copied"] == {"self": {"text": 0, "code": 0}, "translation": {"text": 0, "code": 0}}
    assert details["rounds"][1]["copied"] == {"self": {"text": 0, "code": 2}, "translation": {"text": 1, "code": 0}}
    assert details["rounds"][1]["unprotected"] == 1
    html = (rd.report / "report.html").read_text()
    assert "<td>2 / 1</td>" in html and "WARNING: model-written programs ran without every sandbox protection" in html


def test_copied_records_never_train_nor_become_translation_sources():
    marked = VERIFIED[:6] + [dict(VERIFIED[6], copied=True)]
    assert modes.distinct_correct(marked[6:], 2) == []  # nor a source to translate
    assert modes.counts(modes.build(modes.ModeConfig("self_training"), marked, TRANSLATED)) == {"text": 1, "code": 2}
    translated = TRANSLATED[:2] + [dict(TRANSLATED[2], copied=True)]
    assert modes.counts(modes.build(modes.ModeConfig("cross_only"), VERIFIED, translated)) == {"text": 1, "code": 0}
    assert modes.copied_counts(marked, translated) == {"self": {"text": 0, "code": 1},
                                                       "translation": {"text": 0, "code": 1}}
