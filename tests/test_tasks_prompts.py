"""Rendered prompts (golden), the prompt layout, and the truncation policy."""

import pytest

import tasks
from tasks import prompts
from tasks.catalog import get_task_info
from tasks.exemplars import exemplars_for

# (task, split, index) -> (problem_id, the open block the prompt ends with, targets)
GOLDEN = {
    ("gsm8k_text", "test", 1): (
        "gsm8k/test/2",
        "Question: A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in "
        "total does it take?\nSolution:", "3"),
    ("svamp_code", "test", 1): (
        "svamp/chal-3",
        "Question: Paco had 26 salty cookies and 17 sweet cookies. He ate 14 sweet cookies and 9 salty cookies. "
        "How many salty cookies did Paco have left?\nProgram:\n", "17"),
    ("mawps_multiarith_text", "test", 1): (
        "mawps_multiarith/7",
        "Question: Roger had 16 dollars. For his birthday he got 28 more dollars but spent 25 on a new game. "
        "How much money does he have now?\nSolution:", "19"),
    ("mawps_singleop_code", "test", 1): (
        "mawps_singleop/8",
        "Question: Carol collects 2 peanuts. Carol's father gives Carol 5 more. How many peanuts does Carol "
        "have?\nProgram:\n", "7"),
    ("asdiv_text", "test", 1): (
        "asdiv/2",
        "Question: Ellen has six more balls than Marin. Marin has nine balls. How many balls does Ellen "
        "have?\nSolution:", "15"),
    ("aqua_code", "test", 1): (
        "aqua/2",
        "Question: The original price of an item is discounted 22%. A customer buys the item at this "
        "discounted price using a $20-off coupon. There is no tax on the item, and this was the only item the "
        "customer bought. If the customer paid $1.90 more than half the original price of the item, what was "
        "the original price of the item?\nAnswer choices: (A) $61 (B) $65 (C) $67.40 (D) $70 (E) $78.20"
        "\nProgram:\n", "E"),
    ("strategyqa_text", "test", 1): (
        "strategyqa/2", "Question: Hydrogen's atomic number squared exceeds number of Spice Girls?\nSolution:",
        "no"),
    ("commonsenseqa_text", "test", 1): (
        "commonsenseqa/a7ab086045575bb497933726e4e6ad28",
        "Question: What do people aim to do at work?\nAnswer choices: (A) complete job (B) learn from each "
        "other (C) kill animals (D) wear hats (E) talk to each other\nSolution:", "A"),
    ("synthetic_code", "test", 1): (
        "synthetic_shopping/test/1",
        "Question: Jo buys 5 toys for 87 dollars each. How many dollars does Jo pay?\nProgram:\n", "435"),
    ("synthetic_clock_text", "test", 1): (
        "synthetic_clock/test/1",
        "Question: A clock shows 5 o'clock. What hour does it show 10 hours later, 3 hours after that and "
        "8 hours after that?\nSolution:", "2"),
    ("synthetic_text_to_code", "test", 1): (
        "synthetic_shopping/test/1",
        "Question: Jo buys 5 toys for 87 dollars each. How many dollars does Jo pay?\n"
        "Solution: 5 * 87 = 435. The answer is 435.\nProgram:\n",
        "def solution():\n    total = 5 * 87\n    return total\n"),
    ("synthetic_code_to_text", "test", 1): (
        "synthetic_shopping/test/1",
        "Question: Jo buys 5 toys for 87 dollars each. How many dollars does Jo pay?\n"
        "Program:\ndef solution():\n    total = 5 * 87\n    return total\nSolution:",
        " 5 * 87 = 435. The answer is 435."),
}


@pytest.mark.parametrize("key", sorted(GOLDEN), ids=lambda k: f"{k[0]}-{k[2]}")
def test_rendered_prompt_matches_golden(data_dir, key):
    task, split, index = key
    problem_id, open_block, targets = GOLDEN[key]
    example = get_task_info(task).render(split, None).examples[index]
    assert example["problem_id"] == problem_id
    assert example["targets"] == targets
    blocks = example["inputs"].split(prompts.STOP)
    assert blocks[-1] == open_block
    if task.startswith("synthetic"):
        assert len(blocks) == 1  # zero-shot
    else:
        dataset, method = task.rsplit("_", 1)
        shots = exemplars_for(dataset)
        assert blocks[0] == prompts.INSTRUCTIONS[method]
        assert len(blocks) == len(shots) + 2
        first = shots[0]
        solution = first.text if method == "text" else first.code
        expected = prompts.solve_block(prompts.problem_block(first.question, first.choices), method, solution)
        assert blocks[1] == expected


def test_exemplar_blocks_have_the_documented_layout():
    e = exemplars_for("gsm8k")[3]
    assert prompts.solve_block(prompts.problem_block(e.question), "text", e.text) == (
        f"Question: {e.question}\nSolution: {e.text}")
    assert prompts.solve_block(prompts.problem_block(e.question), "code", e.code) == (
        f"Question: {e.question}\nProgram:\n{e.code.rstrip()}")


def test_every_prompt_ends_in_an_open_block_the_completion_continues():
    shots = [prompts.Shot(e.question, e.choices, e.text, e.code) for e in exemplars_for("svamp")]
    for method in prompts.METHODS:
        prompt = prompts.solve_prompt("How many?", (), method, shots)
        solution = shots[0].text if method == "text" else shots[0].code
        finished = prompt + prompts.completion(method, solution)
        # The finished prompt reads exactly like an exemplar block: what the model saw in its shots.
        assert finished.rstrip("\n").split(prompts.STOP)[-1] == prompts.solve_block("Question: How many?", method, solution)
        assert prompts.solution_of(method, prompts.completion(method, solution)).strip() == solution.strip()


def test_translation_prompts_read_the_problem_back_from_a_record_prompt():
    e = exemplars_for("aqua")[0]
    shots = [prompts.Shot(x.question, x.choices, x.text, x.code) for x in exemplars_for("aqua")]
    record_prompt = prompts.solve_prompt(e.question, e.choices, "text", shots)
    block = prompts.last_problem_block(record_prompt)
    assert block == prompts.problem_block(e.question, e.choices)
    prompt = prompts.translation_prompt(block, "text_to_code", e.text, shots, n_shots=2)
    assert prompt.split(prompts.STOP)[0] == prompts.INSTRUCTIONS["text_to_code"]
    assert prompt.endswith(f"{block}\nSolution: {e.text}\nProgram:\n")
    with pytest.raises(prompts.PromptError, match="Question"):
        prompts.last_problem_block("no question here\nSolution:")


def test_blank_lines_inside_a_question_cannot_split_a_prompt():
    block = prompts.problem_block("First line.\n\nSecond line?")
    assert prompts.STOP not in block and block == "Question: First line.\nSecond line?"


def _words(text):
    return len(text.split())


def test_fit_prompt_drops_leading_exemplars_until_the_prompt_fits():
    shots = [prompts.Shot(e.question, e.choices, e.text, e.code) for e in exemplars_for("gsm8k")]
    build = lambda k: prompts.solve_prompt("What is 2 + 2?", (), "text", shots, k)  # noqa: E731
    full = _words(build(8))
    prompt, used = prompts.fit_prompt(build, 8, full, _words)
    assert used == 8 and prompt == build(8)
    prompt, used = prompts.fit_prompt(build, 8, full - 1, _words)
    assert used == 7 and prompt == build(7)
    # The shots kept are the last ones, in order; the query block is always whole.
    assert shots[0].question not in prompt and shots[1].question in prompt
    assert prompt.endswith("Question: What is 2 + 2?\nSolution:")
    prompt, used = prompts.fit_prompt(build, 8, _words(build(0)), _words)
    assert used == 0 and prompt == "Question: What is 2 + 2?\nSolution:"
    assert prompts.fit_prompt(build, 8, _words(build(0)) - 1, _words) is None


def test_rendering_with_a_budget_drops_what_cannot_fit_and_counts_it(data_dir):
    from tasks.problem_tasks import render_problems
    from tasks.splits import cached_splits

    problems = cached_splits(data_dir).get("svamp", "test")[:20]
    lengths = {"inputs": 30, "targets": 8}
    rendered = render_problems(problems, "code", _words, lengths)
    assert rendered.dropped + len(rendered.examples) == 20
    assert rendered.dropped > 0 and rendered.examples
    for example in rendered.examples:
        assert _words(example["inputs"]) <= 30
        assert prompts.STOP not in example["inputs"]  # no room for any exemplar at this budget
    long_gold = render_problems(problems[:1], "code", _words, {"inputs": 1000, "targets": 1})
    assert long_gold.dropped == 1  # a target that cannot fit with its EOS is dropped, not cut


def test_import_registers_every_task_once():
    assert len(tasks.TASK_NAMES) == len(set(tasks.TASK_NAMES))
    import seqio
    for name in tasks.TASK_NAMES:
        assert seqio.get_mixture_or_task(name).name == name
    assert seqio.get_mixture_or_task("mmst_train").name == "mmst_train"
