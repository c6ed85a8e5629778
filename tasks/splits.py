"""Train/test splits of every dataset, and the cross-dataset deduplication.

Splits (`SPLIT_POLICIES`):
- GSM8K: its published train/test files. CommonsenseQA: published train, and its published dev set as
  `test` (the test labels are not public).
- SVAMP, MAWPS (each subset), ASDiv, AQuA and StrategyQA publish no train/test split here; each gets
  a seeded one: the records in file order are shuffled by `random.Random(f"{SPLIT_SEED}:{dataset}")`
  and the first `test_size` (a count, or a fraction of the file rounded) become `test`, the rest
  `train`. AQuA's and StrategyQA's files are published evaluation sets; a small seeded `train` part
  of each is held back as the pool that their few-shot exemplars are written from.

Deduplication: MAWPS, ASDiv and SVAMP share sources (SVAMP varies ASDiv-A problems; AddSub and
SingleEq hold many of the same problems), so a problem can sit in one dataset's train split and
another's test split. `split_all` removes from every `train` split every problem that is a near
duplicate of any `test` problem of any dataset. Two problems are near duplicates when their
normalised texts (lower case, words and numbers only, number words and `27.0` read as numbers) are
equal, or when they state the same multiset of numbers and either share at least `JACCARD_THRESHOLD`
of their distinct words (Jaccard) or the smaller word set lies at least `CONTAINMENT_THRESHOLD` inside
the larger (a problem quoted inside a longer one). Test splits are never changed.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import random
import re
from typing import Callable, Mapping

from tasks import readers

SPLIT_SEED = 2023
JACCARD_THRESHOLD = 0.6
CONTAINMENT_THRESHOLD = 0.9


@dataclasses.dataclass(frozen=True)
class SplitPolicy:
    """How a dataset's train/test come about: `read(data_dir, split)` per published file, or seeded."""

    published: Mapping[str, Callable[[pathlib.Path], readers.ReadResult]] | None = None
    read_all: Callable[[pathlib.Path], readers.ReadResult] | None = None
    test_size: int | float = 0.0  # seeded: a count, or a fraction of the records


def _mawps(subset: str) -> SplitPolicy:
    return SplitPolicy(read_all=lambda d: readers.read_mawps(d, subset), test_size=0.3)


SPLIT_POLICIES: dict[str, SplitPolicy] = {
    "gsm8k": SplitPolicy(published={"train": lambda d: readers.read_gsm8k(d, "train"),
                                    "test": lambda d: readers.read_gsm8k(d, "test")}),
    "svamp": SplitPolicy(read_all=readers.read_svamp, test_size=300),
    **{f"mawps_{s}": _mawps(s) for s in readers.MAWPS_SUBSETS},
    "asdiv": SplitPolicy(read_all=readers.read_asdiv, test_size=0.3),
    "aqua": SplitPolicy(read_all=readers.read_aqua, test_size=200),
    "strategyqa": SplitPolicy(read_all=readers.read_strategyqa, test_size=2000),
    "commonsenseqa": SplitPolicy(published={"train": lambda d: readers.read_commonsenseqa(d, "train"),
                                            "test": lambda d: readers.read_commonsenseqa(d, "dev")}),
}
DATASETS = tuple(SPLIT_POLICIES)
SPLITS = ("train", "test")


def seeded_split(problems: list[readers.Problem], dataset: str, test_size: int | float,
                 seed: int = SPLIT_SEED) -> dict[str, list[readers.Problem]]:
    """Shuffles with a seed derived from (seed, dataset); the first test_size go to test, in file order."""
    n_test = round(len(problems) * test_size) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < len(problems):
        raise ValueError(f"{dataset}: test size {test_size} leaves no train or no test among {len(problems)}")
    order = list(range(len(problems)))
    random.Random(f"{seed}:{dataset}").shuffle(order)
    test = set(order[:n_test])
    return {"train": [p for i, p in enumerate(problems) if i not in test],
            "test": [p for i, p in enumerate(problems) if i in test]}


# --- near-duplicate detection ------------------------------------------------------------------
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({w: str(10 * i) for i, w in enumerate(
    "thirty forty fifty sixty seventy eighty ninety".split(), start=3)})
_TOKEN_RE = re.compile(r"\d[\d,]*(?:\.\d+)?|[a-z]+")


def _canonical_token(token: str) -> str:
    if token[0].isdigit():
        token = token.replace(",", "")
        return token[:-2] if token.endswith(".0") else token
    return _NUMBER_WORDS.get(token, token)


def fingerprint(text: str) -> tuple[str, ...]:
    """The problem as a sequence of lower-case words and canonical numbers."""
    return tuple(_canonical_token(t) for t in _TOKEN_RE.findall(text.lower()))


def _numbers(tokens: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(t for t in tokens if t[0].isdigit()))


class DuplicateIndex:
    """Answers "is this text a near duplicate of any indexed text?" (see the module docstring)."""

    def __init__(self, texts: list[str], jaccard: float = JACCARD_THRESHOLD,
                 containment: float = CONTAINMENT_THRESHOLD):
        self._jaccard, self._containment = jaccard, containment
        self._exact: set[tuple[str, ...]] = set()
        self._by_numbers: dict[tuple[str, ...], list[frozenset[str]]] = {}
        for text in texts:
            tokens = fingerprint(text)
            self._exact.add(tokens)
            numbers = _numbers(tokens)
            if numbers:
                self._by_numbers.setdefault(numbers, []).append(frozenset(tokens))

    def contains(self, text: str) -> bool:
        tokens = fingerprint(text)
        if tokens in self._exact:
            return True
        words = frozenset(tokens)
        for other in self._by_numbers.get(_numbers(tokens), ()):
            shared = len(words & other)
            if (shared >= self._jaccard * len(words | other)
                    or shared >= self._containment * min(len(words), len(other))):
                return True
        return False


@dataclasses.dataclass(frozen=True)
class Splits:
    """`problems[dataset][split]`; `removed[dataset]` counts train problems dropped as test duplicates."""

    problems: Mapping[str, Mapping[str, list[readers.Problem]]]
    removed: Mapping[str, int]

    def get(self, dataset: str, split: str) -> list[readers.Problem]:
        if dataset not in self.problems:
            raise KeyError(f"unknown dataset {dataset!r}; known: {sorted(self.problems)}")
        if split not in self.problems[dataset]:
            raise KeyError(f"{dataset} has splits {sorted(self.problems[dataset])}, not {split!r}")
        return self.problems[dataset][split]


def raw_splits(data_dir: pathlib.Path, dataset: str, seed: int = SPLIT_SEED) -> dict[str, list[readers.Problem]]:
    """One dataset's train/test before deduplication."""
    policy = SPLIT_POLICIES[dataset]
    if policy.published is not None:
        return {split: read(data_dir).problems for split, read in policy.published.items()}
    return seeded_split(policy.read_all(data_dir).problems, dataset, policy.test_size, seed)


def split_all(data_dir: pathlib.Path, seed: int = SPLIT_SEED) -> Splits:
    """Every dataset's splits, with train problems that duplicate any test problem removed."""
    raw = {name: raw_splits(data_dir, name, seed) for name in DATASETS}
    index = DuplicateIndex([p.question for splits in raw.values() for p in splits["test"]])
    problems, removed = {}, {}
    for name, splits in raw.items():
        train = [p for p in splits["train"] if not index.contains(p.question)]
        removed[name] = len(splits["train"]) - len(train)
        problems[name] = {"train": train, "test": splits["test"]}
    return Splits(problems, removed)


@functools.lru_cache(maxsize=4)
def cached_splits(data_dir: pathlib.Path) -> Splits:
    """split_all for the default seed, read once per data directory and process."""
    return split_all(pathlib.Path(data_dir))
