"""Every few-shot exemplar of the tasks verifies to its gold: the text's answer extracts to it, and
the program, run in the real sandbox, returns it."""

import warnings

import pytest

from mmst_jax.verify.answers import answer_kind, answers_match, extract_answer
from mmst_jax.verify.sandbox import Sandbox
from mmst_jax.verify.verifier import verified_from_exec

DATASETS = ("gsm8k", "svamp", "asdiv", "aqua", "mawps_addsub", "strategyqa", "commonsenseqa")


def exemplars():
    from tasks.exemplars import exemplars_for

    return [(d, e) for d in DATASETS for e in exemplars_for(d)]


def test_every_text_exemplar_states_its_gold():
    for dataset, e in exemplars():
        kind = answer_kind(dataset)
        assert answers_match(extract_answer(e.text, kind), e.gold, kind), (dataset, e.source, e.text)


def test_every_code_exemplar_runs_to_its_gold():
    cases = [(d, e) for d, e in exemplars() if e.code]
    assert len(cases) >= 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Sandbox(lanes=4) as box:
            results = box.run([e.code for _, e in cases])
    for (dataset, e), result in zip(cases, results):
        record = {"dataset": dataset, "gold": e.gold, "problem_id": e.source}
        verified = verified_from_exec(record, result)
        assert verified["status"] == "ok" and verified["correct"], (dataset, e.source, verified)


@pytest.mark.parametrize("dataset", DATASETS)
def test_exemplar_golds_read_as_their_kind(dataset):
    from tasks.exemplars import exemplars_for

    kind = answer_kind(dataset)
    for e in exemplars_for(dataset):
        assert answers_match(e.gold, e.gold, kind), (dataset, e.gold)
