"""The answer comparator and majority vote, on hand-made cases and on every GSM8K training record."""

import json

import pytest

from mmst_jax.verify.answers import (answer_kind, answers_match, extract_answer, gold_answer,
                                     normalize_answer)
from mmst_jax.verify.vote import majority_vote, vote_records


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 72 clips. The answer is 72.", "72"),
    ("The answer is $1,080.", "1080"),
    ("It is 3/4 of a cup. The answer is 3/4.", "0.75"),
    ("The answer is 1 1/2 hours.", "1.5"),
    ("The answer is 50%.", "50"),
    ("The answer is \u22123.", "-3"),
    ("The answer is -0.50 dollars.", "-0.5"),
    ("The answer is .5", "0.5"),
    ("The answer is five apples.", "5"),
    ("the final answer is 15 gallons * 8 pints / gallon = 120 pints", "120"),
    ("The answer is 3.5. Next question: how many are 7?", "3.5"),
    ("She has 3 then 4.\n#### 1,234", "1234"),
    ("so \\boxed{2} and finally \\boxed{\\frac{1}{2}}", "0.5"),
    ("We add 2 and 3 to get 5 cookies", "5"),
    ("There are no digits here", None),
    ("", None),
])
def test_extract_number(text, expected):
    assert extract_answer(text) == expected


def test_answer_sentence_comes_before_other_forms():
    assert extract_answer("The answer is 7.\n#### 9") == "7"
    assert extract_answer("#### 9 then 11") == "9"


@pytest.mark.parametrize("text, kind, expected", [
    ("So the answer is (b) library.", "choice", "B"),
    ("The answer is C.", "choice", "C"),
    ("The answer is e", "choice", "E"),
    ("Option D fits. The answer is option D.", "choice", "D"),
    ("The answer is yes.", "yesno", "yes"),
    ("Frost is common then. The answer is No", "yesno", "no"),
    ("I am not sure.", "yesno", None),
])
def test_extract_choice_and_yesno(text, kind, expected):
    assert extract_answer(text, kind) == expected


@pytest.mark.parametrize("value, expected", [
    (72, "72"), (72.0, "72"), ("72.00", "72"), (0.1 + 0.2, "0.3"), ("1,450,000", "1450000"),
    ("$12", "12"), ("-7", "-7"), ("+7", "7"), (True, None), (float("nan"), None),
    (float("inf"), None), (None, None), ([5], "5"), ([5, 6], None), ("abc", None),
])
def test_normalize_number(value, expected):
    assert normalize_answer(value) == expected


def test_tolerance_is_stated_and_tight_for_counts():
    assert answers_match(3.3333333, 3.33333)          # gold rounded to 5 places
    assert answers_match("0.66666666667", 0.6666666667)
    assert answers_match(71.99999999, "#### 72")
    assert not answers_match(1000001, 1000000)        # counts must be exact
    assert not answers_match(72.01, 72)


def test_bool_nan_inf_are_not_numbers():
    assert not answers_match(True, 1)
    assert not answers_match(float("nan"), float("nan"))
    assert not answers_match(float("inf"), float("inf"))


def test_gold_forms_and_kinds():
    assert gold_answer("Natalia ...\n#### 72", "number") == "72"
    assert gold_answer({"Yes": 0, "No": 1}, "yesno") == "no"
    assert gold_answer(True, "yesno") == "yes"
    assert gold_answer("(c)", "choice") == "C"
    assert answer_kind("gsm8k") == "number"
    assert answer_kind("mawps_addsub") == "number"
    assert answer_kind("strategyqa") == "yesno"
    assert answer_kind("aqua") == "choice"
    assert answer_kind("unknown", {"Yes": 1, "No": 0}) == "yesno"
    assert answer_kind("unknown", "B") == "choice"
    with pytest.raises(ValueError, match="unknown answer kind"):
        answers_match("1", "1", "numbers")


def test_choice_and_yesno_match():
    assert answers_match("The answer is (a)", "A", "choice")
    assert not answers_match("B", "A", "choice")
    assert answers_match(True, {"Yes": 1, "No": 0}, "yesno")
    assert answers_match("no", "No", "yesno")


def test_majority_vote_is_deterministic():
    assert majority_vote(["3", None, "4", "4", "3"]) == ("3", 2)   # tie: first seen wins
    assert majority_vote(["4", "3", "3"]) == ("3", 2)
    assert majority_vote([None, None]) == (None, 0)
    recs = [{"dataset": "gsm8k", "problem_id": 1, "method": "code", "sample_index": i,
             "gold": "#### 4", "answer": a} for i, a in enumerate(["4", "5", "4", None])]
    votes = vote_records(reversed(recs))
    vote = votes[("gsm8k", "1", "code")]
    assert (vote.answer, vote.votes, vote.samples, vote.correct) == ("4", 2, 4, True)


def test_every_gsm8k_worked_answer_extracts_to_its_gold(data_dir):
    path = data_dir / "gsm8k" / "train.jsonl"
    n = 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            record = json.loads(line)
            gold = record["answer"].rsplit("####", 1)[1].strip().replace(",", "")
            got = extract_answer(record["answer"])
            assert got == gold, f"{path}:{lineno}: extracted {got!r}, gold {gold!r}"
            assert answers_match(got, record["answer"]), f"{path}:{lineno}"
            n += 1
    assert n == 7473


@pytest.mark.parametrize("text, expected", [
    ("The answer is " + " " * 100000 + "x", None),
    ("answer" + " " * 99990 + "answer", None),
    ("-" + " " * 50000 + "5", "5"),
    ("\\boxed{" * 20000, None),
    ("\\boxed{1}" * 30000, "1"),
    ("\\frac{" * 50000, None),
    ("1 1/" * 100000, "1"),
    ("1," * 300000, "1"),
])
def test_adversarial_texts_do_not_blow_up(text, expected):
    """Long runs of spaces, unclosed braces and the like: a pattern with an unbounded repeat
    tried at every position would take hours here; the alarm turns such a hang into a failure."""
    import signal

    def hang(*_):
        raise AssertionError("extraction hung on an adversarial text")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        assert extract_answer(text) == expected
        extract_answer(text, "choice")
        extract_answer(text, "yesno")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
