"""The synthetic world: families with default difficulty, seeded generation, train/test splits."""

from __future__ import annotations

import dataclasses
import random
from typing import Mapping, Sequence

from tasks import readers
from tasks.synthetic.families import FAMILY_FUNCTIONS


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """Inclusive ranges, sampled uniformly per problem: operand digits and number of operations."""

    digits: tuple[int, int]
    steps: tuple[int, int]

    def __post_init__(self):
        for name, (lo, hi) in (("digits", self.digits), ("steps", self.steps)):
            if not 1 <= lo <= hi:
                raise ValueError(f"difficulty {name} must be a range 1 <= lo <= hi, got {(lo, hi)}")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    favours: str  # "code", "text" or "both": the method the family is built to suit
    difficulty: Difficulty  # the default knobs
    related: bool = False  # a related task: evaluated in text only, never sampled for training


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("shopping", "code", Difficulty(digits=(2, 4), steps=(1, 2))),
    Family("savings", "code", Difficulty(digits=(2, 4), steps=(2, 3))),
    Family("sequence", "text", Difficulty(digits=(1, 1), steps=(1, 3))),
    Family("clock", "text", Difficulty(digits=(1, 1), steps=(1, 3))),
    Family("frog", "text", Difficulty(digits=(1, 1), steps=(1, 2))),
    Family("change", "both", Difficulty(digits=(1, 2), steps=(1, 2))),
    Family("compare", "text", Difficulty(digits=(1, 2), steps=(1, 2)), related=True),
)}
PROBLEM_FAMILIES = tuple(name for name, f in FAMILIES.items() if not f.related)
RELATED_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.related)


@dataclasses.dataclass(frozen=True)
class SyntheticProblem:
    id: str  # "synthetic_<family>/<split>/<index>"
    family: str
    question: str
    gold: str  # canonical integer string (`yes`/`no` in a related family)
    digits: int
    steps: int
    text: str  # reference chain of thought
    code: str  # reference program

    @property
    def dataset(self) -> str:
        return f"synthetic_{self.family}"

    def solution(self, method: str) -> str:
        if method not in ("text", "code"):
            raise ValueError(f"unknown method {method!r}")
        return self.text if method == "text" else self.code

    def to_problem(self) -> readers.Problem:
        return readers.Problem(id=self.id, dataset=self.dataset, question=self.question, gold=self.gold,
                               gold_raw=self.gold, reference=self.text)


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown synthetic family {name!r}; families: {sorted(FAMILIES)}")
    return FAMILIES[name]


def generate(family: str, n: int, seed: int, split: str = "train",
             difficulty: Difficulty | None = None) -> list[SyntheticProblem]:
    """n problems of one family; the same (family, n, seed, split, difficulty) gives the same problems."""
    spec = _family(family)
    knobs = difficulty or spec.difficulty
    rng = random.Random(f"{seed}:{family}:{split}")
    out = []
    for i in range(n):
        digits, steps = rng.randint(*knobs.digits), rng.randint(*knobs.steps)
        inst = FAMILY_FUNCTIONS[family](rng, digits, steps)
        out.append(SyntheticProblem(id=f"synthetic_{family}/{split}/{i}", family=family, question=inst.question,
                                    gold=str(inst.answer), digits=digits, steps=steps, text=inst.text,
                                    code=inst.code))
    return out


def world_splits(seed: int = 0, n_train: int = 2000, n_test: int = 200,
                 families: Sequence[str] | None = None,
                 difficulty: Mapping[str, Difficulty] | None = None,
                 related: Sequence[str] = ()) -> dict[str, list[SyntheticProblem]]:
    """Train and test problems of the problem `families` (default: every one that is not related)
    and of the `related` families; train keeps no question that is also a test question."""
    for name in related:
        if not _family(name).related:
            raise ValueError(f"{name!r} is not a related family; related families: {list(RELATED_FAMILIES)}")
    names = list(families or PROBLEM_FAMILIES) + [r for r in related if r not in (families or ())]
    difficulty = dict(difficulty or {})
    test = [p for f in names for p in generate(f, n_test, seed, "test", difficulty.get(f))]
    test_questions = {p.question for p in test}
    train = [p for f in names for p in generate(f, n_train, seed, "train", difficulty.get(f))
             if p.question not in test_questions]
    return {"train": train, "test": test}
