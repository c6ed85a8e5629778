"""The synthetic world: reproducible, every reference solution right, knobs that work, a bootstrap
corpus with the coverage asked for, and problems short enough for a tiny model."""

import json
import re
import subprocess
import sys

import pytest

from mmst_jax.records import write_jsonl
from tasks import answers, config, prompts, records
from tasks.synthetic import corpus, world
from tasks.synthetic.families import FAMILY_FUNCTIONS

HARNESS = """
import json, sys
results = []
for program in json.load(sys.stdin):
    namespace = {}
    exec(program, namespace)
    results.append(namespace["solution"]())
print(json.dumps(results))
"""
EQUATION = re.compile(r"(\d+(?: [-+*] \d+)+) = (-?\d+)")


@pytest.fixture(scope="module")
def small_world():
    return world.world_splits(seed=3, n_train=300, n_test=100)


def test_generation_is_reproducible_and_seeded():
    a = world.generate("savings", 50, seed=1)
    assert a == world.generate("savings", 50, seed=1)
    assert a != world.generate("savings", 50, seed=2)
    assert a != world.generate("savings", 50, seed=1, split="test")
    assert [p.id for p in a[:2]] == ["synthetic_savings/train/0", "synthetic_savings/train/1"]


def test_every_reference_program_returns_the_gold(small_world):
    problems = small_world["train"][::3] + small_world["test"]
    run = subprocess.run([sys.executable, "-c", HARNESS], input=json.dumps([p.code for p in problems]),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert [str(r) for r in results] == [p.gold for p in problems]
    for p in problems:
        assert p.code.startswith("def solution():\n") and "\n\n" not in p.code


def test_every_reference_text_computes_right_and_ends_in_the_answer_sentence(small_world):
    for p in small_world["train"] + small_world["test"]:
        assert p.text.endswith(answers.answer_sentence(p.gold)) and "\n" not in p.text
        equations = EQUATION.findall(p.text)
        assert equations, p.text
        for left, right in equations:
            assert eval(left) == int(right), (p.id, left, right)  # digits and + - * only


def test_train_and_test_share_no_question(small_world):
    assert not {p.question for p in small_world["train"]} & {p.question for p in small_world["test"]}
    assert {p.family for p in small_world["test"]} == set(world.PROBLEM_FAMILIES)  # related: only if asked


@pytest.mark.parametrize("family", sorted(world.FAMILIES))
def test_steps_knob_adds_operations(family):
    one = world.generate(family, 40, 0, difficulty=world.Difficulty(digits=(2, 2), steps=(1, 1)))
    three = world.generate(family, 40, 0, difficulty=world.Difficulty(digits=(2, 2), steps=(3, 3)))
    ops = lambda ps: sum(len(re.findall(r" [-+*] ", p.text)) for p in ps)  # noqa: E731
    assert ops(three) > ops(one)
    assert {p.steps for p in three} == {3}


@pytest.mark.parametrize("family", sorted(set(world.FAMILIES) - {"clock"}))
def test_digits_knob_sets_number_size(family):
    def largest(digits):
        ps = world.generate(family, 40, 0, difficulty=world.Difficulty(digits=(digits, digits), steps=(1, 1)))
        return max(max(int(n) for n in re.findall(r"\d+", p.question)) for p in ps)
    assert largest(1) < 100 <= largest(3)


def test_bad_knobs_and_names_are_clear_errors():
    with pytest.raises(ValueError, match="1 <= lo <= hi"):
        world.Difficulty(digits=(3, 2), steps=(1, 1))
    with pytest.raises(KeyError, match="unknown synthetic family 'algebra'"):
        world.generate("algebra", 1, 0)


def test_families_differ_in_what_each_method_finds_hard(small_world):
    """Code-favoured families need exact arithmetic on big numbers in text; text-favoured ones need
    lists, loops or modulo in code, constructs the other families' programs never use."""
    unusual = ("[", "for ", "%")
    biggest = {"code": [], "text": [], "both": []}
    for p in small_world["test"]:
        kind = world.FAMILIES[p.family].favours
        uses_unusual = any(u in p.code for u in unusual)
        assert uses_unusual == (kind == "text"), p.id
        biggest[kind].append(max(int(n) for n in re.findall(r"\d+", p.text)))
    assert sorted(biggest["code"])[len(biggest["code"]) // 2] >= 1000
    assert max(biggest["text"]) < 200


def test_bootstrap_corpus_has_the_coverage_asked_for(small_world):
    coverage = {"text": {"clock": 1.0, "shopping": 0.2}, "code": {"shopping": 1.0, "clock": 0.0}}
    translation = {"text_to_code": {"clock": 0.5}, "code_to_text": {}}
    train = small_world["train"]
    records_ = corpus.build_bootstrap_corpus(train, coverage, translation, seed=5)
    assert records_ == corpus.build_bootstrap_corpus(train, coverage, translation, seed=5)
    counts = corpus.corpus_counts(records_)
    n = {f: sum(p.family == f for p in train) for f in world.FAMILIES}
    assert counts["solve/text"]["clock"] == n["clock"]
    assert counts["solve/code"]["shopping"] == n["shopping"]
    assert 0.1 * n["shopping"] < counts["solve/text"]["shopping"] < 0.3 * n["shopping"]
    assert 0.35 * n["clock"] < counts["text_to_code"]["clock"] < 0.65 * n["clock"]
    assert "clock" not in counts.get("solve/code", {}) and "code_to_text" not in counts
    assert set(counts) == {"solve/text", "solve/code", "text_to_code"}
    with pytest.raises(ValueError, match="unknown family 'algebra'"):
        corpus.build_bootstrap_corpus(train, {"text": {"algebra": 1.0}}, {})
    with pytest.raises(ValueError, match="not a fraction"):
        corpus.build_bootstrap_corpus(train, {"code": {"clock": 2.0}}, {})


def test_default_coverage_gives_each_method_its_own_families(small_world):
    counts = corpus.corpus_counts(corpus.build_bootstrap_corpus(small_world["train"]))
    n = {f: sum(p.family == f for p in small_world["train"]) for f in world.PROBLEM_FAMILIES}
    for name in world.PROBLEM_FAMILIES:
        family = world.FAMILIES[name]
        for method in prompts.METHODS:
            got = counts[f"solve/{method}"].get(name, 0) / n[name]
            assert got == 1.0 if family.favours in (method, "both") else got < 0.25
        for direction in prompts.DIRECTIONS:
            assert 0.1 < counts[direction][name] / n[name] < 0.4


def test_corpus_records_are_training_records_in_the_task_prompt_format(small_world, tmp_path):
    records_ = corpus.build_bootstrap_corpus(small_world["test"][:60])
    path = tmp_path / "bootstrap.jsonl"
    assert write_jsonl(path, records_) == len(records_)
    read = records.read_records([str(path)]).records
    assert read == records_
    by_id = {p.id: p for p in small_world["test"]}
    for r in read:
        p = by_id[r["problem_id"]]
        block = prompts.problem_block(p.question)
        if r["kind"] == "solve":
            assert r["prompt"] == prompts.solve_block(block, r["method"])
        else:
            src = r["kind"].split("_to_")[0]
            assert r["prompt"] == prompts.translate_block(block, r["kind"], p.solution(src))
        assert r["completion"] == prompts.completion(r["method"], p.solution(r["method"]))
        assert r["dataset"] == f"synthetic_{p.family}" and r["gold"] == p.gold


def test_synthetic_tasks_fit_the_tiny_model_budget(bpe_tokenizer_dir, monkeypatch):
    from tasks.catalog import get_task_info
    from tasks.vocabulary import DeferredVocabulary

    monkeypatch.setenv(config.TOKENIZER_ENV, str(bpe_tokenizer_dir))
    vocab = DeferredVocabulary()
    count = lambda text: len(vocab.encode(text))  # noqa: E731
    lengths = config.feature_lengths("synthetic")
    assert lengths["inputs"] + lengths["targets"] <= 256
    for name, split in [("synthetic_text", "test"), ("synthetic_code", "test"), ("synthetic_text_to_code", "test"),
                        ("synthetic_code_to_text", "test"), ("synthetic_bootstrap", "train")]:
        rendered = get_task_info(name).render(split, count)
        assert rendered.dropped == 0, name
        assert max(count(e["inputs"]) for e in rendered.examples) <= lengths["inputs"]
        assert max(count(e["targets"]) for e in rendered.examples) + 1 <= lengths["targets"]


def test_every_family_is_registered_as_tasks():
    import seqio
    for family in world.PROBLEM_FAMILIES:
        for method in prompts.METHODS:
            assert seqio.get_mixture_or_task(f"synthetic_{family}_{method}")
    for family in world.RELATED_FAMILIES:  # evaluated in text only
        assert seqio.get_mixture_or_task(f"synthetic_{family}_text")
        assert f"synthetic_{family}_code" not in seqio.TaskRegistry.names()
    assert set(FAMILY_FUNCTIONS) == set(world.FAMILIES)


def test_related_family_is_yes_no_after_the_same_arithmetic_and_never_a_training_problem():
    w = world.world_splits(seed=4, n_train=200, n_test=60, related=("compare",))
    related = [p for p in w["train"] + w["test"] if p.family == "compare"]
    assert len(related) > 200 and {p.family for p in w["test"]} == set(world.FAMILIES)
    golds = [p.gold for p in related]
    assert set(golds) == {"yes", "no"} and 0.35 < golds.count("yes") / len(golds) < 0.65
    run = subprocess.run([sys.executable, "-c", HARNESS], input=json.dumps([p.code for p in related]),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == golds
    for p in related:
        assert p.text.endswith(answers.answer_sentence(p.gold))
        for left, right in EQUATION.findall(p.text):
            assert eval(left) == int(right), (p.id, left, right)
        first, second = re.findall(r"(\d+) is (?:more|less) than (\d+)\.", p.text)[0]
        assert (int(first) > int(second)) == (p.gold == "yes") and first != second
    # the bootstrap corpus sees it in text only, with no translation pairs
    counts = corpus.corpus_counts(corpus.build_bootstrap_corpus(w["train"]))
    assert counts["solve/text"]["compare"] > 0 and "compare" not in counts["solve/code"]
    assert all("compare" not in counts[d] for d in prompts.DIRECTIONS)
    with pytest.raises(ValueError, match="not a related family"):
        world.world_splits(seed=0, n_train=2, n_test=2, related=("clock",))


def test_related_family_tasks_hold_only_its_problems(monkeypatch):
    import gin

    from tasks.catalog import get_task_info

    with gin.unlock_config():
        gin.bind_parameter("tasks.synthetic_world.n_train", 20)
        gin.bind_parameter("tasks.synthetic_world.n_test", 10)
        gin.bind_parameter("tasks.synthetic_world.related", ["compare"])
    try:
        every = get_task_info("synthetic_text").render("test", None).examples
        compare = get_task_info("synthetic_compare_text").render("test", None).examples
        bootstrap = get_task_info("synthetic_bootstrap").render("train", None).examples
    finally:
        gin.clear_config()
    assert every and not any(e["dataset"] == "synthetic_compare" for e in every)
    assert compare and {e["dataset"] for e in compare} == {"synthetic_compare"}
    assert {e["gold"] for e in compare} <= {"yes", "no"}
    assert any(e["dataset"] == "synthetic_compare" for e in bootstrap)
