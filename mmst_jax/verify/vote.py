"""Majority vote (self-consistency) over a problem's samples.

Public API:
  - ``majority_vote(answers) -> (answer | None, votes)``: the most common normalised answer,
    ignoring None; ties go to the answer seen first, so the result depends only on the order of
    the samples (sort them by ``sample_index``), never on timing.
  - ``vote_records(verified_records, kind_of=None) -> dict[(dataset, problem_id, method), Vote]``:
    one vote per problem and method over verified records, with whether the voted answer is
    correct against the records' gold (compared by ``answers.answers_match``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from mmst_jax.verify.answers import answer_kind, answers_match


@dataclass(frozen=True)
class Vote:
    answer: str | None
    votes: int
    samples: int
    correct: bool


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    for answer in answers:  # first seen among the most common
        if answer is not None and counts[answer] == best:
            return answer, best
    raise AssertionError("unreachable")


def vote_records(records: Iterable[dict[str, Any]]) -> dict[tuple, Vote]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], str(r["problem_id"]), r["method"]), []).append(r)
    out = {}
    for key, group in groups.items():
        group.sort(key=lambda r: (r.get("round", 0), r.get("sample_index", 0)))
        answer, votes = majority_vote([r.get("answer") for r in group])
        kind = answer_kind(key[0], group[0].get("gold"))
        correct = answer is not None and answers_match(answer, group[0].get("gold"), kind)
        out[key] = Vote(answer, votes, len(group), correct)
    return out
