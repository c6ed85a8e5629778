"""Prompts: how a problem, a solution and a few-shot prompt are written, and how prompts are fitted
to a token budget.

Every prompt is a list of blocks separated by one blank line, the last block left open for the
model. A problem block is `Question: ...` (plus `Answer choices: (A) ... (B) ...` for multiple
choice); a text solution follows `Solution:` on the same line, a program follows `Program:` on the
next lines. Text solutions have no line breaks and programs no blank lines, so generation stops at
the first blank line (`STOP`).

    solve, text:   Question: Q\\nSolution:               -> " <chain of thought> The answer is X."
    solve, code:   Question: Q\\nProgram:\\n             -> "def solution():\\n    ...\\n"
    text -> code:  Question: Q\\nSolution: T\\nProgram:\\n -> program
    code -> text:  Question: Q\\nProgram:\\nP\\nSolution:   -> " <chain of thought> ..."

Few-shot prompts start with a one-line instruction, then one finished block per exemplar, then the
open block. The synthetic world uses the same blocks with no instruction and no exemplars.

Truncation policy (`fit_prompt`): a prompt longer than its inputs budget loses whole exemplars from
the front, one at a time, until it fits; text is never cut. If even the bare problem does not fit,
the example is dropped (and counted by the caller), never truncated.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

from mmst_jax.records import DIRECTIONS, METHODS  # noqa: F401  (the methods prompts are written in)

STOP = "\n\n"
TEXT_HEADER = "Solution:"
CODE_HEADER = "Program:"

INSTRUCTIONS = {
    "text": 'Solve each problem step by step in words and end with "The answer is" and the answer.',
    "code": "Solve each problem with a Python program that defines solution() and returns the answer.",
    "text_to_code": "Rewrite each worded solution as a Python program that defines solution() and returns "
                    "the same answer.",
    "code_to_text": 'Rewrite each program as a worded solution that reaches the same answer and ends with '
                    '"The answer is" and the answer.',
}


class PromptError(ValueError):
    """A prompt that cannot be built or fitted as asked."""


@dataclasses.dataclass(frozen=True)
class Shot:
    """What a prompt needs of one exemplar: the problem and its solution in each method."""

    question: str
    choices: tuple[tuple[str, str], ...]
    text: str
    code: str


def problem_block(question: str, choices: Sequence[tuple[str, str]] = ()) -> str:
    """`Question: ...` (+ the choices line); blank lines inside a question are closed up."""
    block = "Question: " + re.sub(r"\n\s*\n", "\n", question.strip())
    if choices:
        block += "\nAnswer choices: " + " ".join(f"({label}) {text}" for label, text in choices)
    return block


def completion(method: str, solution: str) -> str:
    """A solution as the model writes it after its header (the `targets` of a training example)."""
    if method == "text":
        return " " + " ".join(solution.split())
    if method == "code":
        return solution.strip("\n") + "\n"
    raise PromptError(f"unknown method {method!r}; methods are {METHODS}")


def solution_of(method: str, completion_text: str) -> str:
    """The inverse of `completion`: the bare solution a completion holds."""
    if method not in METHODS:
        raise PromptError(f"unknown method {method!r}; methods are {METHODS}")
    return completion_text.strip() if method == "text" else completion_text.strip("\n") + "\n"


def _open(method: str) -> str:
    if method == "text":
        return TEXT_HEADER
    if method == "code":
        return CODE_HEADER + "\n"
    raise PromptError(f"unknown method {method!r}; methods are {METHODS}")


def _solved(method: str, solution: str) -> str:
    return (_open(method) + completion(method, solution)).rstrip("\n")


def solve_block(block: str, method: str, solution: str | None = None) -> str:
    """A problem block followed by a method's header (and its solution, for an exemplar)."""
    return f"{block}\n" + (_open(method) if solution is None else _solved(method, solution))


def translate_block(block: str, direction: str, source: str, target: str | None = None) -> str:
    """A problem, the source method's solution and the target method's header (and solution)."""
    if direction not in DIRECTIONS:
        raise PromptError(f"unknown translation direction {direction!r}; directions are {DIRECTIONS}")
    src, dst = direction.split("_to_")
    head = f"{block}\n{_solved(src, source)}\n"
    return head + (_open(dst) if target is None else _solved(dst, target))


def few_shot(kind: str, shots: Sequence[str], query: str) -> str:
    """Instruction, finished exemplar blocks, then the open query block; zero shots: the query alone."""
    if not shots:
        return query
    return STOP.join([INSTRUCTIONS[kind], *shots, query])


def solve_prompt(question: str, choices: Sequence[tuple[str, str]], method: str,
                 shots: Sequence[Shot], n_shots: int | None = None) -> str:
    """The few-shot prompt asking `method` to solve one problem, with the last `n_shots` exemplars."""
    used = list(shots)[len(shots) - (len(shots) if n_shots is None else n_shots):]
    blocks = [solve_block(problem_block(s.question, s.choices), method, getattr(s, method)) for s in used]
    return few_shot(method, blocks, solve_block(problem_block(question, choices), method))


def translation_prompt(block: str, direction: str, source_solution: str, shots: Sequence[Shot],
                       n_shots: int | None = None) -> str:
    """The few-shot prompt asking to rewrite a solution of one method as the other."""
    src, dst = direction.split("_to_")
    used = list(shots)[len(shots) - (len(shots) if n_shots is None else n_shots):]
    blocks = [translate_block(problem_block(s.question, s.choices), direction, getattr(s, src),
                              getattr(s, dst)) for s in used]
    return few_shot(direction, blocks, translate_block(block, direction, source_solution))


def last_problem_block(prompt: str) -> str:
    """The problem block of a prompt's open (last) block: what a solution record was asked to solve."""
    last = prompt.rsplit(STOP, 1)[-1]
    for header in ("\n" + TEXT_HEADER, "\n" + CODE_HEADER):
        if header in last:
            last = last.split(header, 1)[0]
    if not last.startswith("Question: "):
        raise PromptError(f"prompt does not end in a 'Question: ...' block: {prompt[-200:]!r}")
    return last


def fit_prompt(build: Callable[[int], str], n_shots: int, max_tokens: int,
               count_tokens: Callable[[str], int]) -> tuple[str, int] | None:
    """The prompt with the most exemplars (up to n_shots) within max_tokens: (prompt, shots used).

    Exemplars are dropped from the front; None when even zero exemplars do not fit.
    """
    for k in range(n_shots, -1, -1):
        prompt = build(k)
        if count_tokens(prompt) <= max_tokens:
            return prompt, k
    return None
