"""Few-shot exemplars, written for this project from training problems of each dataset.

Every exemplar names the training record it was written from (`source`, a Problem id), repeats that
problem's text and gold, and gives a worked solution in each method: `text`, a short chain of thought
ending in the answer sentence, and `code`, a Python program defining `solution()` that returns the
answer (multiple-choice programs return the letter). tests/test_tasks_exemplars.py checks every one
against the data: the source is in its dataset's deduplicated train split, the text's answer sentence
states the gold, and the program, when run, returns it.

Math datasets have eight exemplars; StrategyQA and CommonsenseQA, evaluated with the text method
only, have six with no program. The four MAWPS subsets share one set (two from each subset).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Exemplar:
    source: str  # the Problem id of the training record it was written from
    question: str
    gold: str  # canonical, as tasks.answers
    text: str  # chain of thought ending in "The answer is X."
    code: str = ""  # a program defining solution(); empty for text-only datasets
    choices: tuple[tuple[str, str], ...] = ()


def exemplars_for(dataset: str) -> tuple[Exemplar, ...]:
    """The exemplar set a dataset's prompts use."""
    from tasks.exemplars import aqua, asdiv, commonsenseqa, gsm8k, mawps, strategyqa, svamp

    sets = {"gsm8k": gsm8k.EXEMPLARS, "svamp": svamp.EXEMPLARS, "asdiv": asdiv.EXEMPLARS,
            "aqua": aqua.EXEMPLARS, "strategyqa": strategyqa.EXEMPLARS,
            "commonsenseqa": commonsenseqa.EXEMPLARS}
    if dataset.startswith("mawps_"):
        return mawps.EXEMPLARS
    if dataset not in sets:
        raise KeyError(f"no exemplars for dataset {dataset!r}; known: {sorted(sets) + ['mawps_*']}")
    return sets[dataset]
