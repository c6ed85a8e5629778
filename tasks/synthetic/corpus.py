"""The bootstrap corpus: what a model trained from scratch sees before any self-training.

`build_bootstrap_corpus` turns synthetic training problems into training records (the sample
record format of docs/architecture.md, `prompt`/`completion`, plus `family` and `kind`): for each method and
family a chosen fraction (`coverage`) of the problems get a record solving them with that method's
reference solution, and for each translation direction and family a fraction get a record that
rewrites one reference solution as the other. The defaults give each method its own families and
leave the other method's families thin, with some translation pairs everywhere, so that the two
methods start with different strengths and MMST has something to carry across.
"""

from __future__ import annotations

import collections
import random
from typing import Iterable, Mapping, Sequence

from tasks import prompts
from tasks.synthetic.world import FAMILIES, PROBLEM_FAMILIES, SyntheticProblem


def default_coverage() -> dict[str, dict[str, float]]:
    """Solve coverage: a method sees all problems of the families it suits and of the shared
    family, and a tenth of the others; a related family is seen in text only."""
    return {method: {f.name: (1.0 if f.favours in (method, "both") else 0.1) if method == "text" or not f.related
                     else 0.0 for f in FAMILIES.values()}
            for method in prompts.METHODS}


def default_translation_coverage() -> dict[str, dict[str, float]]:
    """A quarter of every problem family's problems as translation pairs, both directions."""
    return {direction: {name: 0.25 for name in PROBLEM_FAMILIES} for direction in prompts.DIRECTIONS}


def solve_record(problem: SyntheticProblem, method: str, seed: int) -> dict:
    prompt = prompts.solve_block(prompts.problem_block(problem.question), method)
    return _record(problem, method, "solve", prompt, prompts.completion(method, problem.solution(method)), seed)


def translation_record(problem: SyntheticProblem, direction: str, seed: int) -> dict:
    src, dst = direction.split("_to_")
    prompt = prompts.translate_block(prompts.problem_block(problem.question), direction, problem.solution(src))
    return _record(problem, dst, direction, prompt, prompts.completion(dst, problem.solution(dst)), seed)


def _record(problem: SyntheticProblem, method: str, kind: str, prompt: str, completion: str, seed: int) -> dict:
    return {"problem_id": problem.id, "dataset": problem.dataset, "method": method, "sample_index": 0,
            "round": 0, "prompt": prompt, "completion": completion, "gold": problem.gold, "seed": seed,
            "family": problem.family, "kind": kind}


def _check(table: Mapping[str, Mapping[str, float]], keys: Sequence[str], what: str) -> None:
    for key, per_family in table.items():
        if key not in keys:
            raise ValueError(f"{what}: unknown key {key!r}; expected one of {tuple(keys)}")
        for family, fraction in per_family.items():
            if family not in FAMILIES:
                raise ValueError(f"{what}[{key!r}]: unknown family {family!r}; families: {sorted(FAMILIES)}")
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"{what}[{key!r}][{family!r}] = {fraction} is not a fraction in [0, 1]")


def build_bootstrap_corpus(problems: Iterable[SyntheticProblem],
                           coverage: Mapping[str, Mapping[str, float]] | None = None,
                           translation_coverage: Mapping[str, Mapping[str, float]] | None = None,
                           seed: int = 0) -> list[dict]:
    """Training records for the given (training) problems; a family missing from a table gets 0.

    Which problems are covered is drawn with `random.Random(f"{seed}:{key}:{problem.id}")`, so each
    method's and direction's choice is independent and reproducible. Records come out shuffled.
    """
    coverage = default_coverage() if coverage is None else coverage
    translation_coverage = default_translation_coverage() if translation_coverage is None else translation_coverage
    _check(coverage, prompts.METHODS, "coverage")
    _check(translation_coverage, prompts.DIRECTIONS, "translation_coverage")
    records = []
    for problem in problems:
        for method, per_family in coverage.items():
            if random.Random(f"{seed}:{method}:{problem.id}").random() < per_family.get(problem.family, 0.0):
                records.append(solve_record(problem, method, seed))
        for direction, per_family in translation_coverage.items():
            if random.Random(f"{seed}:{direction}:{problem.id}").random() < per_family.get(problem.family, 0.0):
                records.append(translation_record(problem, direction, seed))
    random.Random(seed).shuffle(records)
    return records


def corpus_counts(records: Iterable[dict]) -> dict[str, dict[str, int]]:
    """{kind/method: {family: count}}, e.g. counts["solve/text"]["clock"]."""
    counts: dict[str, dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
    for r in records:
        counts[f"{r['kind']}/{r['method']}" if r["kind"] == "solve" else r["kind"]][r["family"]] += 1
    return {k: dict(v) for k, v in counts.items()}
