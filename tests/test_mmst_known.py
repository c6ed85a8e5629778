"""Known solutions (`mmst.Tasks.known`, tasks/known.py): the tasks' prompts are the problem tasks'
own train prompts, every known solution verifies correct with the real verifier, and a micro run
whose model solves nothing still has training records of both methods in round 1."""

import json

import gin
import pytest

from micro_run import mmst_run
from mmst_jax.mmst import modes, problems, report, rounds, rundir
from mmst_jax.records import METHODS, part_name, read_jsonl, write_jsonl
from mmst_jax.verify import files

KNOWN = "mmst_known_{name}_{method}"
MATH = ("gsm8k", "svamp", "mawps_addsub", "mawps_multiarith", "mawps_singleeq", "mawps_singleop", "asdiv", "aqua")
# Known solutions per dataset and method at the default budgets: GSM8K's rationale of each of its
# 7473 training problems, and each dataset's exemplars (two per MAWPS subset: they share one set).
EXPECTED = {"gsm8k": {"text": 7473 + 8, "code": 8}, "svamp": {"text": 8, "code": 8},
            "asdiv": {"text": 8, "code": 8}, "aqua": {"text": 8, "code": 8},
            **{f"mawps_{s}": {"text": 2, "code": 2} for s in ("addsub", "multiarith", "singleeq", "singleop")}}


@pytest.fixture(scope="module", autouse=True)
def tokenizer_env(bpe_tokenizer_dir):
    from tasks import config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.TOKENIZER_ENV, str(bpe_tokenizer_dir))
        yield


def _rendered(name: str) -> list[dict]:
    """A task's train examples as its SeqIO source gives them (tasks.catalog.register: rendered and
    fitted with the task's tokenizer), without SeqIO's tokenization, which leaves the text as it is."""
    import tasks
    from tasks.catalog import get_task_info

    return get_task_info(name).render("train", lambda text: len(tasks.VOCABULARY.encode(text))).examples


@pytest.fixture(scope="module")
def math_known(data_dir):
    """(known solutions per method, train prompts per method) of every math dataset, as records in
    the loop's form (mmst_jax.mmst.problems.known_solutions, task_prompts)."""
    known = {m: [] for m in METHODS}
    train = {m: [] for m in METHODS}
    for dataset in MATH:
        for method in METHODS:
            known[method] += [{"problem_id": e["problem_id"], "dataset": e["dataset"], "method": e["method"],
                               "gold": e["gold"], "prompt": e["inputs"], "completion": e["targets"], "known": True}
                              for e in _rendered(KNOWN.format(name=dataset, method=method))]
            train[method] += [{**e, "prompt": e["inputs"]} for e in _rendered(f"{dataset}_{method}")]
    return known, train


def test_the_loop_reads_known_solutions_through_seqio(data_dir, math_known):
    """mmst_jax.mmst.problems.known_solutions, through SeqIO's registry as the loop reads it, gives
    what the tasks render, and its prompts are those the loop samples (problem_prompts)."""
    import seqio

    from mmst_jax.sampling.prompts import task_prompts

    names = problems.TaskNames(problems=["svamp", "mawps_addsub"], known=KNOWN)
    known = problems.known_solutions(names)
    for method in METHODS:
        rendered = [s for s in math_known[0][method] if s["dataset"] in names.problems]
        assert known[method] == rendered and len(rendered) == 10
        loop = {(p["dataset"], p["problem_id"]): p["prompt"] for name in names.problems
                for p in task_prompts(seqio.get_mixture_or_task(f"{name}_{method}"), "train")}
        assert all(loop[(s["dataset"], s["problem_id"])] == s["prompt"] for s in known[method])


def _samples(known: dict[str, list[dict]]) -> list[dict]:
    """Every known solution as a round-1 sample record (a sample index per problem and method)."""
    out, index = [], {}
    for method in METHODS:
        for s in known[method]:
            key = (s["dataset"], s["problem_id"], method)
            index[key] = index.get(key, -1) + 1
            out.append({**s, "sample_index": index[key], "round": 1, "seed": 0})
    return out


def test_tasks_are_registered_with_the_contract_features():
    import seqio

    import tasks

    names = [n for n in tasks.TASK_NAMES if n.startswith("mmst_known_")]
    assert {KNOWN.format(name=d, method=m) for d in MATH for m in METHODS} <= set(names)
    assert {"mmst_known_synthetic_text", "mmst_known_synthetic_code", "mmst_known_synthetic_clock_code"} <= set(names)
    task = seqio.get_mixture_or_task("mmst_known_svamp_code")
    assert set(task.splits) == {"train"}
    example = next(task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
    assert {"inputs", "targets", "problem_id", "dataset", "method", "gold"} <= set(example)
    assert example["method"] == b"code" and example["dataset"] == b"svamp"
    assert example["targets_pretokenized"].decode().startswith("def solution():")


def test_rationale_solution_is_one_line_ending_in_the_answer_sentence():
    from tasks.known import rationale_solution
    from tasks.readers import gsm8k_reference

    reference = gsm8k_reference("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                                "Natalia sold 48+24 = <<48+24=72>>72 clips altogether\n#### 72")
    assert rationale_solution(reference, "72") == ("Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 "
                                                   "clips altogether. The answer is 72.")


def test_known_prompts_are_the_problem_tasks_train_prompts(math_known):
    known, train = math_known
    counts = {}
    for method in METHODS:
        prompts = {(p["dataset"], p["problem_id"]): p for p in train[method]}
        for s in known[method]:
            assert s["method"] == method and s["known"] is True
            p = prompts[(s["dataset"], s["problem_id"])]  # an id of the problem task's train split
            assert s["prompt"] == p["prompt"], (s["dataset"], s["problem_id"], method)
            assert s["gold"] == p["gold"]
            if method == "text":
                assert "\n" not in s["completion"] and s["completion"].startswith(" ")
            else:
                assert s["completion"].startswith("def solution():") and s["completion"].endswith("\n")
                assert "\n\n" not in s["completion"]
            counts.setdefault(s["dataset"], {}).setdefault(method, 0)
            counts[s["dataset"]][method] += 1
    print("known solutions per dataset and method:", json.dumps(counts, sort_keys=True))
    assert counts == EXPECTED


def test_every_known_solution_verifies_correct(math_known, tmp_path):
    samples = _samples(math_known[0])
    source, target = tmp_path / "samples" / "part-00000-of-00001.jsonl", tmp_path / "verified" / "part-00000-of-00001.jsonl"
    write_jsonl(source, samples)
    files.verify_part(source, target, lanes=2, progress=False)  # as the loop verifies a part file
    verified = read_jsonl(target)
    assert len(verified) == len(samples)
    bad = [v for v in verified if not v["correct"] or v["copied"]]
    by = {}
    for v in verified:
        c = by.setdefault(f"{v['dataset']}/{v['method']}", [0, 0])
        c[0] += bool(v["correct"] and not v["copied"])
        c[1] += 1
    print("known solutions verified correct:", json.dumps(by, sort_keys=True))
    assert not bad, [(v["dataset"], v["problem_id"], v["method"], v["status"], v["detail"]) for v in bad[:5]]
    assert modes.known_counts(verified) == {m: {"correct": sum(1 for v in verified if v["method"] == m),
                                                "total": sum(1 for v in verified if v["method"] == m)}
                                            for m in METHODS}


def test_synthetic_known_solutions_are_the_reference_solutions():
    from tasks.synthetic.tasks import synthetic_world  # (importing `tasks` registers every task)

    gin.clear_config()
    try:
        gin.bind_parameter("tasks.synthetic_world.n_train", 4)
        gin.bind_parameter("tasks.synthetic_world.n_test", 2)
        names = problems.TaskNames(problems=["synthetic", "synthetic_frog"], known=KNOWN)
        assert names.known_tasks() == ["mmst_known_synthetic_text", "mmst_known_synthetic_code",
                                       "mmst_known_synthetic_frog_text", "mmst_known_synthetic_frog_code"]
        known = problems.known_solutions(names)
        train = problems.problem_prompts(problems.TaskNames(problems=["synthetic"])).train
        world = {p.id: p for p in synthetic_world()["train"]}
    finally:
        gin.clear_config()
    for method in METHODS:
        prompts = {p["problem_id"]: p["prompt"] for p in train[method]}
        # every training problem once (all families), frog's twice (its own task too)
        assert len(known[method]) == len(world) + sum(1 for p in world.values() if p.family == "frog")
        for s in known[method]:
            assert s["prompt"] == prompts[s["problem_id"]]
            assert s["completion"].strip() == world[s["problem_id"]].solution(method).strip()


def test_task_names_known_pattern_is_checked():
    assert problems.TaskNames(problems=["a", "b"]).known_tasks() == []
    assert problems.TaskNames(problems=["a", "b"], known="all_known").known_tasks() == ["all_known"]
    assert problems.TaskNames(problems=["a"], known="{name}_k").known_tasks() == ["a_k"]
    with pytest.raises(problems.TaskError, match="the only fields"):
        problems.TaskNames(problems=["a"], known="{name}_{direction}")


def _prompt(pid, dataset="d", method="text"):
    return {"problem_id": pid, "dataset": dataset, "method": method, "gold": "1", "prompt": f"Q {pid} {method}"}


def test_known_first_draw_and_known_samples():
    train = {m: [_prompt(i, "d1" if i < "5" else "d2", m) for i in "0123456789"] for m in METHODS}
    known = {"text": [{**_prompt(i, "d1" if i < "5" else "d2"), "completion": " x. The answer is 1."}
                      for i in "1367"],
             "code": [{**_prompt(i, "d1" if i < "5" else "d2", "code"), "completion": "def solution():\n"}
                      for i in "36"]}
    drawn = list("9876543210")
    # known in both methods (6 of d2, 3 of d1), then in text only (7, 1), then the rest; within
    # each, the datasets take turns, each in drawn order
    assert rounds.known_first(drawn, train, known) == list("6371948250")
    prompts = {m: [p for p in train[m] if p["problem_id"] in ("3", "7", "8")] for m in METHODS}
    twice = {**known, "text": known["text"] + [{**known["text"][1], "completion": " y. The answer is 1."}] * 3}
    out = rounds.known_samples(prompts, twice, num_samples=2, round_index=1)
    assert [(x["problem_id"], x["sample_index"]) for x in out["text"]] == [("3", 2), ("3", 3), ("7", 2)]
    assert [(x["problem_id"], x["sample_index"]) for x in out["code"]] == [("3", 2)]
    assert all(x["known"] and x["round"] == 1 and x["prompt"] == f"Q {x['problem_id']} {x['method']}"
               for m in METHODS for x in out[m])
    wrong = {**known, "code": [{**known["code"][0], "prompt": "another prompt"}]}
    with pytest.raises(problems.TaskError, match="prompt is not the problem task's"):
        rounds.known_samples(prompts, wrong, num_samples=2, round_index=1)


def test_report_counts_known_solutions(tmp_path):
    rd = rundir.RunDir(tmp_path / "run")
    rd.check_config("x = 1\n")
    ev = {"eval": {"d": {m: {"accuracy": 0.0, "maj_at_k": None, "n": 2} for m in METHODS}}, "overlap": {}, "lost": 0}
    for r in (0, 1):
        rundir.mark_done(rd.stage(r, "eval"), "x", ev)
    rundir.mark_done(rd.stage(1, "verified"), "x", {
        "verified": {"text": {"correct": 3, "total": 9, "lost": 0}, "code": {"correct": 1, "total": 8, "lost": 0}},
        "known": {"text": {"correct": 3, "total": 3}}})
    rundir.mark_done(rd.stage(1, "train"), "x", {"train_examples": {"text": 3, "code": 0}, "known": {"text": 2, "code": 0}})
    # problem 1: text solved by a known solution only, code by its own sample; problem 2: both by their own
    sample = lambda pid, m, ok, **kw: {"problem_id": pid, "dataset": "d", "method": m, "sample_index": 0,  # noqa: E731
                                       "correct": ok, **kw}
    write_jsonl(rd.stage(1, "verified") / "text" / part_name(0, 1), [
        sample("1", "text", False), {**sample("1", "text", True, known=True), "sample_index": 1},
        sample("2", "text", True)])
    write_jsonl(rd.stage(1, "verified") / "code" / part_name(0, 1), [sample("1", "code", True), sample("2", "code", True)])
    metrics = report.write_report(rd, "mmst")
    solved = json.loads((rd.report / "details.json").read_text())["rounds"][1]["train_overlap"]["d"]
    assert (solved["both"], solved["only_code"], solved["only_text"]) == (1, 1, 0)  # a known solution is not the model's
    assert "known" not in metrics["rounds"][0]
    assert metrics["rounds"][1]["known"] == {"text": {"correct": 3, "total": 3, "train": 2},
                                             "code": {"correct": 0, "total": 0, "train": 0}}
    assert "known text" in (rd.report / "report.html").read_text()


def _run(run_dir, *flags):
    return mmst_run(run_dir, "--gin.mmst.ModeConfig.replay=0", *flags)


@pytest.mark.slow
def test_micro_run_with_known_solutions_trains_both_methods_in_round_1(tmp_path):
    """The micro model (40 steps from scratch) solves next to nothing, and with no replay its
    round 1 would train on (next to) nothing; the known solutions give both methods training
    records, so fine-tuning, the export of the model and its evaluation run."""
    run_dir = tmp_path / "run"
    proc = _run(run_dir, f"--gin.mmst.Tasks.known='{KNOWN}'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r1 = run_dir / "round_001"
    for method in METHODS:
        samples = read_jsonl(r1 / "samples" / method / f"part-00000-of-00001{rounds.KNOWN_SUFFIX}")
        verified = read_jsonl(r1 / "verified" / method / f"part-00000-of-00001{rounds.KNOWN_SUFFIX}")
        assert samples and all(x["known"] and x["sample_index"] >= 2 for x in samples)  # after the 2 sampled
        assert [x["problem_id"] for x in verified] == [x["problem_id"] for x in samples]
        assert all(x["correct"] and not x["copied"] for x in verified), [x["detail"] for x in verified][:3]
        train = read_jsonl(r1 / "train" / method / "part-00000-of-00001.jsonl")
        assert train and sum(1 for x in train if x.get("known")) >= len(train) // 2
    assert (r1 / "checkpoint" / "model" / "config.json").is_file()  # fine-tuned and exported
    assert not (r1 / "checkpoint" / "model.json").exists()
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    round1 = metrics["rounds"][1]
    for method in METHODS:
        k = round1["known"][method]
        assert k["total"] > 0 and k["correct"] == k["total"] and 0 < k["train"] <= round1["train_examples"][method]
        assert round1["verified"][method]["total"] == 72 + k["total"]  # 36 problems x 2 samples, and the known
    marker = json.loads((r1 / "verified" / rundir.MARKER).read_text())
    assert marker["info"]["known"] == {m: {"correct": round1["known"][m]["correct"],
                                           "total": round1["known"][m]["total"]} for m in METHODS}
    # started again: every stage is done, nothing changes
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*.jsonl"))}
    proc = _run(run_dir, f"--gin.mmst.Tasks.known='{KNOWN}'")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*.jsonl"))} == before
