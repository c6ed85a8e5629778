"""Every few-shot exemplar against the data: its source is a deduplicated training problem, its text
states the gold in the answer sentence, and its program, run in its own process, returns the gold."""

import json
import subprocess
import sys

import pytest

from tasks import answers, splits
from tasks.exemplars import exemplars_for

MATH_SETS = ("gsm8k", "svamp", "mawps_addsub", "asdiv", "aqua")
ALL_SETS = MATH_SETS + ("strategyqa", "commonsenseqa")
HARNESS = "\nimport json\nprint(json.dumps(solution()))\n"


@pytest.fixture(scope="module")
def all_splits(data_dir):
    return splits.cached_splits(data_dir)


def _train_problem(all_splits, source):
    dataset = source.split("/")[0]
    by_id = {p.id: p for p in all_splits.get(dataset, "train")}
    return by_id.get(source)


@pytest.mark.parametrize("name", ALL_SETS)
def test_exemplars_come_from_deduplicated_train_problems(all_splits, name):
    exemplars = exemplars_for(name)
    assert len(exemplars) == (8 if name in MATH_SETS else 6)
    assert len({e.source for e in exemplars}) == len(exemplars)
    for e in exemplars:
        problem = _train_problem(all_splits, e.source)
        assert problem is not None, f"{e.source} is not in the deduplicated train split"
        assert e.question == problem.question
        assert e.gold == problem.gold
        assert e.choices == problem.choices


@pytest.mark.parametrize("name", ALL_SETS)
def test_text_exemplars_end_in_the_answer_sentence_with_the_gold(name):
    for e in exemplars_for(name):
        assert e.text.endswith(answers.answer_sentence(e.gold)), e.source
        assert answers.final_answer_of_text(e.text) == e.gold
        assert "\n" not in e.text


@pytest.mark.parametrize("name", MATH_SETS)
def test_code_exemplars_execute_to_the_gold(name):
    for e in exemplars_for(name):
        assert e.code.startswith("def solution():\n"), e.source
        assert "\n\n" not in e.code.strip(), "a blank line would end the program at a prompt separator"
        run = subprocess.run([sys.executable, "-c", e.code + HARNESS], capture_output=True, text=True,
                             timeout=30)
        assert run.returncode == 0, f"{e.source}: {run.stderr}"
        value = json.loads(run.stdout.strip().splitlines()[-1])
        assert answers.same_answer(value, e.gold), f"{e.source}: returned {value!r}, gold {e.gold}"


def test_mawps_subsets_share_one_set_drawn_from_every_subset():
    sources = {e.source.split("/")[0] for e in exemplars_for("mawps_singleop")}
    assert sources == {"mawps_addsub", "mawps_multiarith", "mawps_singleeq", "mawps_singleop"}
    assert exemplars_for("mawps_addsub") is exemplars_for("mawps_singleop")


def test_unknown_exemplar_set_is_a_clear_error():
    with pytest.raises(KeyError, match="no exemplars for dataset 'nope'"):
        exemplars_for("nope")
