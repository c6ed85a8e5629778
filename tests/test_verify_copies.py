"""Copied answers: programs that return a literal and text translations with no intermediate step
are marked by the verifier and kept out of training; a run's training files can be checked."""

import json

import pytest

from mmst_jax import records as records_lib
from mmst_jax.cli.verify import main
from mmst_jax.mmst import modes
from mmst_jax.verify.copies import constant_code_examples, copied_code, copied_text


@pytest.mark.parametrize("program", [
    "def solution():\n    return 42\n",
    "def solution():\n    return -3.5\n",
    "def solution():\n    x = 42\n    y = x\n    return y\n",
    "ANSWER = '17'\ndef solution():\n    return ANSWER\n",
    "def solution():\n    total = 3 * 4\n    return 12\n",          # computes, but returns a literal
    "def solution():\n    x = 5\n    x = 6\n    return x\n",
    "def solution():\n    if True:\n        return 1\n    return 2\n",
    "solution = lambda: 7\n",
])
def test_literal_returns_are_copied(program):
    assert copied_code(program).startswith("copied: solution() returns")


@pytest.mark.parametrize("program", [
    "def solution():\n    return 6 * 7\n",
    "def solution():\n    a = 3\n    b = 4\n    return a + b\n",
    "def solution():\n    x = 0\n    for i in range(3):\n        x += i\n    return x\n",
    "def solution():\n    x = 1\n    x = x + 1\n    return x\n",
    "def solution(n=4):\n    return n\n",
    "def solution():\n    return int('5')\n",
    "def solution():\n    if True:\n        return 1\n    return compute()\n",
    "def solution():\n    x = 1\n    def f():\n        global x\n        x = 9\n    f()\n    return x\n",
    "def solution():\n    return len\n",
    "import math\ndef solution():\n    return math.pi\n",
    "def solution():\n    return\n",
    "def solution(:\n    return 1\n",
    "x = 1\n",
])
def test_computed_or_unparsable_returns_are_not_copied(program):
    assert copied_code(program) is None


@pytest.mark.parametrize("text, copied", [
    ("The answer is 7.", True),
    ("He has 7 apples in the end. The answer is 7.", True),
    ("3 plus 4 is 7. The answer is 7.", False),
    ("Three and four make seven. The answer is 7.", False),
    ("We add 3 and 4.\nThe answer is 7.", False),
    ("I cannot tell.", False),
])
def test_text_translations_without_a_step_are_copied(text, copied):
    assert (copied_text(text) is not None) == copied


def _sample(i, method, completion, **extra):
    return {"problem_id": f"p{i}", "dataset": "gsm8k", "method": method, "sample_index": 0, "round": 1,
            "prompt": "Q", "completion": completion, "gold": "#### 7", "seed": 0, **extra}


def test_the_verifier_marks_copies_and_training_leaves_them_out(tmp_path):
    samples = [_sample(0, "code", "def solution():\n    return 7\n"),
               _sample(1, "code", "def solution():\n    return 3 + 4\n"),
               _sample(2, "text", "The answer is 7."),  # sampled: never saw its answer
               _sample(3, "text", "The answer is 7.", source_method="code", source_sample_index=0,
                       train_prompt="T"),
               _sample(4, "code", "def solution():\n    x = 7\n    return x\n", source_method="text",
                       source_sample_index=0, train_prompt="T")]
    src = tmp_path / "samples.jsonl"
    records_lib.write_jsonl(src, samples)
    out = tmp_path / "verified.jsonl"
    assert main(["--input", str(src), "--output", str(out), "--lanes", "2", "--no-progress"]) == 0
    verified = records_lib.read_jsonl(out)
    assert all(v["correct"] for v in verified)
    assert [v["copied"] for v in verified] == [True, False, False, True, True]
    assert all(v["detail"].startswith("copied:") for v in verified if v["copied"])
    own, translated = verified[:3], verified[3:]
    mix = modes.build(modes.ModeConfig("mmst"), own, translated)
    assert [(r["problem_id"], r["source"]) for r in mix["code"]] == [("p1", "self")]
    assert [(r["problem_id"], r["source"]) for r in mix["text"]] == [("p2", "self")]
    assert modes.copied_counts(own, translated) == {"self": {"text": 0, "code": 1},
                                                    "translation": {"text": 1, "code": 1}}


def test_constant_code_examples_in_a_run_directory(tmp_path, capsys):
    from mmst_jax.verify import copies

    train = tmp_path / "run" / "round_001" / "train" / "code"
    good = {"problem_id": "a", "source": "self", "round": 1, "completion": "def solution():\n    return 2 * 3\n"}
    replay = {"problem_id": "b", "source": "replay", "round": 1, "completion": "def solution():\n    return 6\n"}
    records_lib.write_jsonl(train / "part-00000-of-00001.jsonl", [good, replay])
    assert constant_code_examples(tmp_path / "run") == []
    assert copies._main([str(tmp_path / "run")]) == 0
    bad = {"problem_id": "c", "source": "translation", "round": 1, "completion": "def solution():\n    return 6\n"}
    records_lib.write_jsonl(train / "part-00000-of-00001.jsonl", [good, replay, bad])
    [found] = constant_code_examples(tmp_path / "run")
    assert found["problem_id"] == "c" and found["source"] == "translation"
    assert copies._main([str(tmp_path / "run")]) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["problem_id"] == "c"
