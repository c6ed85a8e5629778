"""Evaluation metrics from verified records of test problems.

- accuracy per dataset and method: the share of problems whose greedy sample is correct;
- maj@k: the share whose majority answer over k sampled solutions is correct (mmst_jax.verify.vote);
- overlap of solved problems (greedy) between the methods: both / only text / only code / neither,
  and the correlation of the two methods' success (the phi coefficient; negative means the methods
  solve different problems, which is where MMST has something to carry across); on a round's
  training samples (`any_sample`: a problem is solved by a method when one of its verified samples
  is correct, the paper's Table 4 on pseudo-labels);
- across both methods (`cross_method`), per dataset: the oracle (either method right), a vote
  over both methods' samples pooled (each method's vote samples, or its greedy one without them;
  a tie goes to the method with more correct answers on the round's training samples of the
  dataset, `prior`, {dataset: {method: rate}}, else text), and a per-problem choice of one method: the one more consistent with itself (the larger share
  of its samples on its own majority answer); where that ties (always, with one sample each), the
  method whose answer the pooled vote took. `picks` is how often the choice took each method.

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


def overlap(greedy: Sequence[dict], any_sample: bool = False) -> dict[str, dict]:
    """{dataset: {"both", "only_text", "only_code", "neither", "n", "correlation"}} over problems
    evaluated by both methods (greedy: its first sample; `any_sample`: any of its samples correct)."""
    solved: dict[str, dict[str, dict[str, bool]]] = collections.defaultdict(lambda: collections.defaultdict(dict))
    for (dataset, pid, method), rs in _by_problem(greedy).items():
        solved[dataset][pid][method] = (any(bool(r.get("correct")) for r in rs) if any_sample else
                                        bool(min(rs, key=lambda r: r["sample_index"]).get("correct")))
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


def training_rates(verified: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{dataset: {method: share of correct samples}} of a round's verified training samples: what
    a run knows of each method's strength without looking at a test label."""
    counts: dict[str, dict[str, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
    for r in verified:
        c = counts[r["dataset"]][r["method"]]
        c[0] += bool(r.get("correct"))
        c[1] += 1
    return {d: {m: ok / n for m, (ok, n) in per.items() if n} for d, per in counts.items()}


def cross_method(greedy: Sequence[dict], vote: Sequence[dict] = (),
                 prior: dict[str, dict[str, float]] | None = None) -> dict[str, dict]:
    """{dataset: {"oracle", "vote", "choice", "picks": {method: share}, "n"}} over the problems
    both methods were evaluated on (accuracies as fractions; see the module's docstring)."""
    from mmst_jax.verify.answers import answer_kind, answers_match
    from mmst_jax.verify.vote import majority_vote

    pooled_from = _by_problem(vote) if vote else _by_problem(greedy)
    first = {k: min(rs, key=lambda r: r["sample_index"]) for k, rs in _by_problem(greedy).items()}
    problems = sorted({(d, pid) for d, pid, _ in first})
    per: dict[str, dict[str, list]] = collections.defaultdict(lambda: {"oracle": [], "vote": [], "choice": [],
                                                                       "picks": []})
    for dataset, pid in problems:
        if not all((dataset, pid, m) in first for m in METHODS):
            continue
        samples = {m: sorted(pooled_from.get((dataset, pid, m), [first[(dataset, pid, m)]]),
                             key=lambda r: r["sample_index"]) for m in METHODS}
        gold = first[(dataset, pid, METHODS[0])].get("gold")
        kind = answer_kind(dataset, gold)
        right = lambda a: a is not None and answers_match(a, gold, kind)  # noqa: E731
        rates = (prior or {}).get(dataset, {})
        order = sorted(METHODS, key=lambda m: (-rates.get(m, 0.0), m != "text"))  # ties: the first seen
        voted, _ = majority_vote([r.get("answer") for m in order for r in samples[m]])
        own = {m: majority_vote([r.get("answer") for r in samples[m]]) for m in METHODS}
        consistency = {m: own[m][1] / len(samples[m]) for m in METHODS}
        picked = max(METHODS, key=lambda m: (consistency[m], own[m][0] is not None and own[m][0] == voted,
                                             rates.get(m, 0.0), m == "text"))
        row = per[dataset]
        row["oracle"].append(any(bool(first[(dataset, pid, m)].get("correct")) for m in METHODS))
        row["vote"].append(right(voted))
        row["choice"].append(right(own[picked][0]))
        row["picks"].append(picked)
    if len(per) > 1:
        per[ALL] = {k: [x for d in sorted(per) for x in per[d][k]] for k in ("oracle", "vote", "choice", "picks")}
    out = {}
    for dataset, row in sorted(per.items()):
        n = len(row["oracle"])
        out[dataset] = {"oracle": sum(row["oracle"]) / n, "vote": sum(row["vote"]) / n,
                        "choice": sum(row["choice"]) / n,
                        "picks": {m: row["picks"].count(m) / n for m in METHODS}, "n": n}
    return out
