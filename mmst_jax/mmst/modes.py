"""Training mixtures of a round: MMST and its ablations.

    mmst           each method trains on its own verified samples and the verified translations of
                   the other method's (the union the paper trains on)
    cross_only     translations of the other method's verified solutions only
    self_training  its own verified samples only (the single-method, STaR-like baseline)

`cap_to` (optional, another mode's name) caps each method's examples at the count that mode
would have in the same round (the paper's size-matched control). `finetune_from` is `base` (every
round fine-tunes the base model on the round's mixture) or `previous` (continue from the last
round's model). `max_per_problem` keeps at most that many distinct solutions of one problem per
method and source, so one easy problem does not fill the mixture. `replay` adds that many records
of the base model's own training data (round 0's `train/`, the bootstrap corpus of a model trained
from scratch) to every round's mixture, the same for every mode: a guard against forgetting the
formats, off (0) by default.

A copied solution (`copied` on its verified record: a program whose solution() returns a literal
without computing it, or a text translation that states the answer with no intermediate step;
mmst_jax.verify.copies) is never a training example nor a source to translate, whatever the
mode; `copied_counts` says how many correct ones were kept out, per source and method.

A known solution (`known: true` on its record: a solution of a known-solution task that round 1
adds to its samples, mmst_jax.mmst.rounds) is a sample like any other here: verified, counted
and trained on under the same rules; its training record keeps `known: true`, and
`known_counts` counts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Mapping, Sequence

from mmst_jax.records import METHODS

MODES = ("mmst", "cross_only", "self_training")
FINETUNE_FROM = ("base", "previous")


@dataclasses.dataclass(frozen=True)
class ModeConfig:
    mode: str = "mmst"
    cap_to: str | None = None
    finetune_from: str = "base"
    max_per_problem: int = 2
    replay: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {MODES}")
        if self.cap_to is not None and self.cap_to not in MODES:
            raise ValueError(f"cap_to={self.cap_to!r} is not a mode; choose one of {MODES} or None")
        if self.finetune_from not in FINETUNE_FROM:
            raise ValueError(f"finetune_from={self.finetune_from!r}; choose one of {FINETUNE_FROM}")
        if self.replay < 0:
            raise ValueError(f"replay must be >= 0, got {self.replay}")
        if self.max_per_problem < 1:
            raise ValueError(f"max_per_problem must be >= 1, got {self.max_per_problem}")


def distinct_correct(records: Sequence[dict], max_per_problem: int) -> list[dict]:
    """Correct records that are not copied, distinct completions, at most max_per_problem per
    problem, in input order."""
    seen: set[tuple[str, str]] = set()
    per_problem: dict[str, int] = {}
    out = []
    for r in records:
        if not r.get("correct") or r.get("copied"):
            continue
        key = (str(r["problem_id"]), r["completion"].strip())
        if key in seen or per_problem.get(key[0], 0) >= max_per_problem:
            continue
        seen.add(key)
        per_problem[key[0]] = per_problem.get(key[0], 0) + 1
        out.append(r)
    return out


def own_examples(verified: Sequence[dict], method: str, max_per_problem: int) -> list[dict]:
    """A method's own verified samples as training records."""
    rows = sorted((r for r in verified if r["method"] == method),
                  key=lambda r: (str(r["dataset"]), str(r["problem_id"]), r["sample_index"]))
    return [_train_record(r, r["prompt"], "self") for r in distinct_correct(rows, max_per_problem)]


def cross_examples(translated: Sequence[dict], method: str, max_per_problem: int) -> list[dict]:
    """Verified translations into `method` as training records: the target method's own prompt
    (`train_prompt`) and the translated solution."""
    rows = sorted((r for r in translated if r["method"] == method),
                  key=lambda r: (str(r["dataset"]), str(r["problem_id"]), r.get("source_sample_index", 0),
                                 r["sample_index"]))
    return [_train_record(r, r["train_prompt"], "translation") for r in distinct_correct(rows, max_per_problem)]


def _train_record(r: dict, prompt: str, source: str) -> dict:
    out = {"problem_id": r["problem_id"], "dataset": r["dataset"], "method": r["method"],
           "sample_index": r["sample_index"], "round": r.get("round", 0), "prompt": prompt,
           "completion": r["completion"], "gold": r["gold"], "seed": r.get("seed", 0),
           "correct": True, "source": source}
    if r.get("known"):
        out["known"] = True
    return out


def mixture(mode: str, verified: Sequence[dict], translated: Sequence[dict],
            max_per_problem: int) -> dict[str, list[dict]]:
    """Each method's training records under one mode."""
    out = {}
    for method in METHODS:
        own = own_examples(verified, method, max_per_problem)
        cross = cross_examples(translated, method, max_per_problem)
        out[method] = {"mmst": own + cross, "cross_only": cross, "self_training": own}[mode]
    return out


def _stable_order(records: Sequence[dict], seed: int) -> list[dict]:
    def key(r):
        text = f"{seed}:{r['problem_id']}:{r['source']}:{r['sample_index']}:{r['completion']}"
        return hashlib.sha256(text.encode()).hexdigest()
    return sorted(records, key=key)


def build(config: ModeConfig, verified: Sequence[dict], translated: Sequence[dict],
          seed: int = 0) -> dict[str, list[dict]]:
    """The round's training records per method under `config` (capped if asked)."""
    chosen = mixture(config.mode, verified, translated, config.max_per_problem)
    if config.cap_to is not None:
        caps = {m: len(rs) for m, rs in mixture(config.cap_to, verified, translated,
                                                 config.max_per_problem).items()}
        chosen = {m: _stable_order(rs, seed)[:caps[m]] if len(rs) > caps[m] else rs
                  for m, rs in chosen.items()}
    return chosen


def replay_records(base_records: Sequence[dict], n: int, seed: int = 0) -> dict[str, list[dict]]:
    """`n` records of the base training data (a seeded choice), per method, marked source=replay."""
    if n <= 0 or not base_records:
        return {m: [] for m in METHODS}
    chosen = _stable_order([{**r, "source": "replay"} for r in base_records], seed)[:n]
    return {m: [r for r in chosen if r["method"] == m] for m in METHODS}


def copied_counts(verified: Sequence[dict], translated: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Correct but copied records kept out of training: {"self": {method: n}, "translation":
    {method: n}} (a translation counts under its target method)."""
    out = {}
    for source, records in (("self", verified), ("translation", translated)):
        out[source] = {m: sum(1 for r in records if r["method"] == m and r.get("correct") and r.get("copied"))
                       for m in METHODS}
    return out


def known_counts(verified: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Known solutions among verified records, {method: {"correct", "total"}} for each method that
    has any ({} when none)."""
    out = {}
    for m in METHODS:
        rs = [r for r in verified if r.get("known") and r["method"] == m]
        if rs:
            out[m] = {"correct": sum(1 for r in rs if r.get("correct")), "total": len(rs)}
    return out


def counts(mix: Mapping[str, Sequence[dict]]) -> dict[str, int]:
    return {m: len(mix.get(m, ())) for m in METHODS}
