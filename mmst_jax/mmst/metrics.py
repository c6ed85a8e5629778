"""Evaluation metrics from verified records of test problems.

- accuracy per dataset and method: the share of problems whose greedy sample is correct;
- maj@k: the share whose majority answer over k sampled solutions is correct (mmst_jax.verify.vote);
- overlap of solved problems (greedy) between the methods: both / only text / only code / neither,
  and the correlation of the two methods' success (the phi coefficient; negative means the methods
  solve different problems, which is where MMST has something to carry across).

`ALL` aggregates every dataset that both methods were evaluated on, when there are several.
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, Sequence

from mmst_jax.records import METHODS

ALL = "all"


def _by_problem(records: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    out = collections.defaultdict(list)
    for r in records:
        out[(r["dataset"], str(r["problem_id"]), r["method"])].append(r)
    return out


def _with_all(per: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    both = [d for d, m in per.items() if all(x in m for x in METHODS)]
    if len(both) > 1:
        per[ALL] = {m: [x for d in both for x in per[d][m]] for m in METHODS}
    return per


def accuracy(greedy: Sequence[dict], vote: Sequence[dict] = ()) -> dict[str, dict[str, dict]]:
    """{dataset: {method: {"accuracy", "maj_at_k" (None without vote samples), "n"}}}."""
    from mmst_jax.verify.vote import vote_records

    per: dict[str, dict[str, list[bool]]] = collections.defaultdict(dict)
    for (dataset, _, method), rs in sorted(_by_problem(greedy).items()):
        first = min(rs, key=lambda r: r["sample_index"])
        per[dataset].setdefault(method, []).append(bool(first.get("correct")))
    votes: dict[str, dict[str, list[bool]]] = collections.defaultdict(dict)
    for (dataset, _, method), v in sorted(vote_records(list(vote)).items()) if vote else ():
        votes[dataset].setdefault(method, []).append(bool(v.correct))
    per, votes = _with_all(dict(per)), _with_all(dict(votes))
    out: dict[str, dict[str, dict]] = {}
    for dataset in sorted(per):
        out[dataset] = {}
        for method in sorted(per[dataset]):
            xs = per[dataset][method]
            vs = votes.get(dataset, {}).get(method)
            out[dataset][method] = {"accuracy": sum(xs) / len(xs) if xs else 0.0,
                                    "maj_at_k": (sum(vs) / len(vs)) if vs else None, "n": len(xs)}
    return out


def phi(pairs: Sequence[tuple[bool, bool]]) -> float | None:
    """The phi coefficient (Pearson correlation of two 0/1 variables); None when one is constant."""
    n = len(pairs)
    if not n:
        return None
    a = sum(1 for x, y in pairs if x and y)
    b = sum(1 for x, y in pairs if x and not y)
    c = sum(1 for x, y in pairs if not x and y)
    d = n - a - b - c
    denominator = math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    return None if denominator == 0 else (a * d - b * c) / denominator


def overlap(greedy: Sequence[dict]) -> dict[str, dict]:
    """{dataset: {"both", "only_text", "only_code", "neither", "n", "correlation"}} over problems
    evaluated by both methods (greedy)."""
    solved: dict[str, dict[str, dict[str, bool]]] = collections.defaultdict(lambda: collections.defaultdict(dict))
    for (dataset, pid, method), rs in _by_problem(greedy).items():
        solved[dataset][pid][method] = bool(min(rs, key=lambda r: r["sample_index"]).get("correct"))
    pairs_per: dict[str, list[tuple[bool, bool]]] = {}
    for dataset, problems in solved.items():
        pairs = [(p["text"], p["code"]) for _, p in sorted(problems.items()) if all(m in p for m in METHODS)]
        if pairs:
            pairs_per[dataset] = pairs
    if len(pairs_per) > 1:
        pairs_per[ALL] = [x for d in sorted(pairs_per) for x in pairs_per[d]]
    out = {}
    for dataset, pairs in sorted(pairs_per.items()):
        out[dataset] = {"both": sum(1 for t, c in pairs if t and c),
                        "only_text": sum(1 for t, c in pairs if t and not c),
                        "only_code": sum(1 for t, c in pairs if c and not t),
                        "neither": sum(1 for t, c in pairs if not t and not c),
                        "n": len(pairs), "correlation": phi(pairs)}
    return out
