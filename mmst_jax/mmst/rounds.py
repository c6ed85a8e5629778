"""Rounds 1..N: sample, verify, translate, build the mixtures, fine-tune, evaluate.

Each stage reads only the files of the stages before it (mmst_jax.mmst.stages describes the
layout); its input digest chains the markers of what it read, so a stage redone upstream makes
every stage after it stale.

Known solutions (`mmst.Tasks.known`, mmst_jax.mmst.problems): round 1 of such a run draws its
`train_problems` with the problems that have known solutions first (`round_prompts`) and adds,
for each problem it samples, up to `num_samples` known solutions per method to its samples, as
sample records with `known: true` and sample indices after the sampled ones (`known_samples`).
Host i of n writes its share (known record j for j % n == i) beside its sampled part, as
`samples/{method}/part-{i:05d}-of-{n:05d}.known.jsonl`, and verifies it into the same name under
`verified/`; every later stage reads both (`read_parts`). The samples stage's input digest covers
the known records, so binding, unbinding or changing them redoes the round from its samples.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import random
from typing import Mapping, Sequence

from etils import epath

from mmst_jax.mmst import evaluate, finetune, modes, rundir
from mmst_jax.mmst.stages import RunContext, seed_for
from mmst_jax.records import DIRECTIONS, METHODS, dumps, part_name, read_parts, write_jsonl
from mmst_jax.sampling.records import generate_records, sample_record
from mmst_jax.verify import files

KNOWN_SUFFIX = ".known.jsonl"  # a host's known-solution part: part-HHHHH-of-NNNNN.known.jsonl


@dataclasses.dataclass(frozen=True)
class Known:
    """Round 1's known solutions: the round's prompts (drawn with them first), the known sample
    records per method, and their digest (an input of the samples stage)."""

    prompts: dict[str, list[dict]]
    records: dict[str, list[dict]]
    digest: str


def run_round(ctx: RunContext, r: int) -> None:
    stages = ctx.stages
    previous = stages.digest(r - 1, "checkpoint")
    known = round_known(ctx, r)
    inputs = rundir.combine(previous) if known is None else rundir.combine(previous, known.digest)
    samples = stages.run(r, "samples", inputs, lambda d: _sample(ctx, r, d, known))["digest"]
    verified = stages.run(r, "verified", rundir.combine(samples), lambda d: _verify(ctx, r, d),
                          _verified_info)["digest"]
    translated = stages.run(r, "translated", rundir.combine(verified), lambda d: _translate(ctx, r, d),
                            _translated_info)["digest"]
    replay = stages.digest(0, "train") if ctx.config.mode.replay else None
    train = stages.run(r, "train", rundir.combine(verified, translated, replay), lambda d: None,
                       lambda d: _build(ctx, r, d))["digest"]
    init_round = 0 if ctx.config.mode.finetune_from == "base" else r - 1
    stages.run(r, "checkpoint", rundir.combine(train, stages.digest(init_round, "checkpoint")),
               lambda d: _finetune_round(ctx, r, d, init_round),
               lambda d: {"model": rundir.model_path(d)}, hash_contents=False)
    evaluate.evaluate_round(ctx, r)


def round_prompts(ctx: RunContext, r: int, known: Mapping[str, Sequence[dict]] | None = None
                  ) -> dict[str, list[dict]]:
    """The training problems sampled in round r, per method: `train_problems` of them (0: all),
    a seeded draw per round. With `known` (known solutions per method, problems.known_solutions)
    the draw puts the problems that have them first (`known_first`)."""
    n = ctx.config.train_problems
    train = ctx.prompts().train
    ids = sorted({str(p["problem_id"]) for m in METHODS for p in train[m]})
    if not n or n >= len(ids):
        return train
    random.Random(f"{ctx.config.generation.seed}:problems:{r}").shuffle(ids)
    if known is not None:
        ids = known_first(ids, train, known)
    chosen = set(ids[:n])
    return {m: sorted((p for p in train[m] if str(p["problem_id"]) in chosen),
                      key=lambda p: (p["dataset"], str(p["problem_id"]))) for m in METHODS}


def known_first(ids: Sequence[str], train: Mapping[str, Sequence[dict]],
                known: Mapping[str, Sequence[dict]]) -> list[str]:
    """Problem ids in drawn order, those with a known solution in every method first, then those
    with one in some, then the rest; within each, the datasets take turns (each in drawn order),
    so that a few problems reach every dataset's known solutions of every method."""
    dataset = {str(p["problem_id"]): p["dataset"] for m in METHODS for p in train[m]}
    methods: dict[str, set[str]] = collections.defaultdict(set)
    for m in METHODS:
        for s in known.get(m, ()):
            methods[str(s["problem_id"])].add(m)
    turn: collections.Counter = collections.Counter()
    key = {}
    for position, i in enumerate(ids):
        group = (len(METHODS) - len(methods.get(i, ())), dataset.get(i, ""))
        key[i] = (group[0], turn[group], position)
        turn[group] += 1
    return sorted(ids, key=key.__getitem__)


def round_known(ctx: RunContext, r: int) -> Known | None:
    """Round r's known solutions (None unless r is 1 and the run binds `mmst.Tasks.known`)."""
    if r != 1 or ctx.tasks.known is None:
        return None
    from mmst_jax.mmst.problems import known_solutions

    solutions = known_solutions(ctx.tasks)
    prompts = round_prompts(ctx, r, solutions)
    records = known_samples(prompts, solutions, num_samples=ctx.config.generation.num_samples, round_index=r)
    h = hashlib.sha256()
    for method in METHODS:
        drawn = "".join(f"{p['dataset']}/{p['problem_id']}\n" for p in prompts[method])
        h.update(f"{method}\n{drawn}".encode() + "".join(dumps(x) for x in records[method]).encode())
    return Known(prompts, records, h.hexdigest())


def known_samples(prompts: Mapping[str, Sequence[dict]], solutions: Mapping[str, Sequence[dict]], *,
                  num_samples: int, round_index: int) -> dict[str, list[dict]]:
    """Sample records (`known: true`) of the known solutions of the problems in `prompts`, per
    method in prompt order: at most `num_samples` (at least 1) per problem, with sample indices
    `num_samples`, `num_samples + 1`, ... after the sampled ones. A known solution's prompt and
    gold must be the run's own for its problem (TaskError otherwise)."""
    from mmst_jax.mmst.problems import TaskError

    k = max(1, num_samples)
    out = {}
    for method in METHODS:
        by_problem = collections.defaultdict(list)
        for s in solutions.get(method, ()):
            by_problem[(s["dataset"], str(s["problem_id"]))].append(s)
        records = []
        for p in prompts.get(method, ()):
            for j, s in enumerate(by_problem.get((p["dataset"], str(p["problem_id"])), [])[:k]):
                if s["prompt"] != p["prompt"] or str(s["gold"]) != str(p["gold"]):
                    what = "prompt" if s["prompt"] != p["prompt"] else f"gold ({s['gold']!r}, not {p['gold']!r})"
                    raise TaskError(f"known solution of {p['dataset']} problem {p['problem_id']} ({method}): its "
                                    f"{what} is not the problem task's; a known-solution task must render the "
                                    "problem task's own train prompt (mmst_jax.mmst.problems)")
                record = sample_record(p, k + j, s["completion"], round_index=round_index, seed=0)
                records.append({**record, "known": True})
        out[method] = records
    return out


def sample_settings(ctx: RunContext) -> dict:
    g = ctx.config.generation
    return dict(max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, chunk_rows=g.chunk_rows,
                length_bucket=g.length_bucket, mesh=ctx.mesh, rules=ctx.rules, progress=ctx.config.progress)


def _sample(ctx: RunContext, r: int, d: epath.Path, known: Known | None = None) -> None:
    g = ctx.config.generation
    model = ctx.model(r - 1)
    for method, prompts in (known.prompts if known else round_prompts(ctx, r)).items():
        if known is not None:
            part = d / method / part_name(ctx.host, ctx.hosts, KNOWN_SUFFIX)
            if not part.exists():
                write_jsonl(part, [x for j, x in enumerate(known.records[method]) if j % ctx.hosts == ctx.host])
        generate_records(
            prompts, d / method, model, temperature=g.temperature, num_samples=g.num_samples,
            seed=seed_for(g.seed, r, f"samples/{method}"), round_index=r, top_k=g.top_k, top_p=g.top_p,
            desc=f"round {r} sampling {method}", **sample_settings(ctx))


def verify_dir(ctx: RunContext, source: epath.Path, target: epath.Path, desc: str, suffix: str = ".jsonl") -> None:
    """Verifies this host's part file of `source` (`part-HHHHH-of-NNNNN{suffix}`) into `target`."""
    lim = ctx.config.limits
    name = part_name(ctx.host, ctx.hosts, suffix)
    files.verify_part(source / name, target / name, timeout_s=lim.timeout_s, memory_mb=lim.memory_mb,
                      lanes=lim.lanes, restarts=lim.restarts, progress=ctx.config.progress, desc=desc,
                      allow_unprotected=lim.allow_unprotected)


def _verify(ctx: RunContext, r: int, d: epath.Path) -> None:
    for method in METHODS:
        source = ctx.run_dir.stage(r, "samples") / method
        verify_dir(ctx, source, d / method, f"round {r} verifying {method}")
        if (source / part_name(ctx.host, ctx.hosts, KNOWN_SUFFIX)).exists():
            verify_dir(ctx, source, d / method, f"round {r} verifying known {method}", KNOWN_SUFFIX)


def _verified_info(d: epath.Path) -> dict:
    """The verified counts per method (known solutions included), and apart, of the known ones."""
    records = [x for m in METHODS for x in read_parts(d / m)]
    info = {"verified": files.summarize(records)}
    known = modes.known_counts(records)
    if known:
        info["known"] = known
    return info


def _translate(ctx: RunContext, r: int, d: epath.Path) -> None:
    from mmst_jax.mmst.problems import translation_prompts

    g = ctx.config.generation
    model = ctx.model(r - 1)
    train = ctx.prompts().train
    verified_dir = ctx.run_dir.stage(r, "verified")
    for direction in DIRECTIONS:
        src, dst = direction.split("_to_")
        sources = modes.distinct_correct(
            sorted(read_parts(verified_dir / src), key=lambda x: (x["dataset"], str(x["problem_id"]), x["sample_index"])),
            ctx.config.mode.max_per_problem)
        own_prompts = {str(p["problem_id"]): p["prompt"] for p in train[dst]}
        by_key = {(s["dataset"], str(s["problem_id"]), s["sample_index"]): s for s in sources}
        prompts = []
        for t in translation_prompts(ctx.tasks, direction, sources):
            s = by_key[(t["dataset"], str(t["problem_id"]), t["source_sample_index"])]
            if str(s["problem_id"]) not in own_prompts:
                continue
            prompts.append({"problem_id": s["problem_id"], "dataset": s["dataset"], "method": dst,
                            "gold": s["gold"], "prompt": t["prompt"],
                            "train_prompt": own_prompts[str(s["problem_id"])], "source_method": src,
                            "source_sample_index": s["sample_index"]})
        generate_records(
            prompts, d / direction, model, temperature=g.translation_temperature,
            num_samples=g.translation_samples, seed=seed_for(g.seed, r, direction), round_index=r,
            desc=f"round {r} translating {direction}", **sample_settings(ctx))
        verify_dir(ctx, d / direction, d / direction / "verified", f"round {r} verifying {direction}")


def _translated_info(d: epath.Path) -> dict:
    out, lost = {}, {}
    for direction in DIRECTIONS:
        records = read_parts(d / direction / "verified")
        out[direction] = {"kept": sum(1 for x in records if x.get("correct")), "total": len(records)}
        lost[direction] = sum(1 for x in records if x.get("lost"))
    return {"translated": out, "lost": lost}


def _build(ctx: RunContext, r: int, d: epath.Path) -> dict:
    verified_dir, translated_dir = ctx.run_dir.stage(r, "verified"), ctx.run_dir.stage(r, "translated")
    verified = [x for m in METHODS for x in read_parts(verified_dir / m)]
    translated = [x for t in DIRECTIONS for x in read_parts(translated_dir / t / "verified")]
    seed = seed_for(ctx.config.generation.seed, r, "build")
    mix = modes.build(ctx.config.mode, verified, translated, seed=seed)
    if ctx.config.mode.replay:
        base_dir = ctx.run_dir.stage(0, "train")
        base = [x for m in METHODS for x in (read_parts(base_dir / m) if (base_dir / m).exists() else [])]
        for method, extra in modes.replay_records(base, ctx.config.mode.replay, seed).items():
            mix[method] = mix[method] + extra
    for method in METHODS:
        write_jsonl(d / method / part_name(0, 1), mix[method])
    sources = {m: {s: sum(1 for x in mix[m] if x["source"] == s) for s in ("self", "translation", "replay")}
               for m in METHODS}
    info = {"train_examples": modes.counts(mix), "sources": sources}
    if any(x.get("known") for x in verified):
        info["known"] = {m: sum(1 for x in mix[m] if x.get("known")) for m in METHODS}
    return info


def _finetune_round(ctx: RunContext, r: int, d: epath.Path, init_round: int) -> None:
    init = rundir.model_path(ctx.run_dir.stage(init_round, "checkpoint"))
    finetune.finetune(ctx, d, ctx.model_config(init), init, ctx.finetune, ctx.run_dir.stage(r, "train"), seed=r)
