"""Rounds 1..N: sample, verify, translate, build the mixtures, fine-tune, evaluate.

Each stage reads only the files of the stages before it (mmst_jax.mmst.stages describes the
layout); its input digest chains the markers of what it read, so a stage redone upstream makes
every stage after it stale.
"""

from __future__ import annotations

import random

from etils import epath

from mmst_jax.mmst import evaluate, finetune, modes, rundir
from mmst_jax.mmst.stages import RunContext, seed_for
from mmst_jax.models.orbax import read_config
from mmst_jax.records import DIRECTIONS, METHODS, part_name, read_parts, write_jsonl
from mmst_jax.sampling.records import generate_records
from mmst_jax.verify import files


def run_round(ctx: RunContext, r: int) -> None:
    stages = ctx.stages
    previous = stages.digest(r - 1, "checkpoint")
    samples = stages.run(r, "samples", rundir.combine(previous), lambda d: _sample(ctx, r, d))["digest"]
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


def round_prompts(ctx: RunContext, r: int) -> dict[str, list[dict]]:
    """The training problems sampled in round r, per method: `train_problems` of them (0: all),
    a seeded draw per round."""
    n = ctx.config.train_problems
    train = ctx.prompts().train
    ids = sorted({str(p["problem_id"]) for m in METHODS for p in train[m]})
    if not n or n >= len(ids):
        return train
    random.Random(f"{ctx.config.generation.seed}:problems:{r}").shuffle(ids)
    chosen = set(ids[:n])
    return {m: sorted((p for p in train[m] if str(p["problem_id"]) in chosen),
                      key=lambda p: (p["dataset"], str(p["problem_id"]))) for m in METHODS}


def sample_settings(ctx: RunContext) -> dict:
    g = ctx.config.generation
    return dict(max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, chunk_rows=g.chunk_rows,
                length_bucket=g.length_bucket, mesh=ctx.mesh, rules=ctx.rules, progress=ctx.config.progress)


def _sample(ctx: RunContext, r: int, d: epath.Path) -> None:
    g = ctx.config.generation
    model = ctx.model(r - 1)
    for method, prompts in round_prompts(ctx, r).items():
        generate_records(
            prompts, d / method, model, temperature=g.temperature, num_samples=g.num_samples,
            seed=seed_for(g.seed, r, f"samples/{method}"), round_index=r, top_k=g.top_k, top_p=g.top_p,
            desc=f"round {r} sampling {method}", **sample_settings(ctx))


def verify_dir(ctx: RunContext, source: epath.Path, target: epath.Path, desc: str) -> None:
    """Verifies this host's part file of `source` into `target`."""
    lim = ctx.config.limits
    name = part_name(ctx.host, ctx.hosts)
    files.verify_part(source / name, target / name, timeout_s=lim.timeout_s, memory_mb=lim.memory_mb,
                      lanes=lim.lanes, restarts=lim.restarts, progress=ctx.config.progress, desc=desc,
                      allow_unprotected=lim.allow_unprotected)


def _verify(ctx: RunContext, r: int, d: epath.Path) -> None:
    for method in METHODS:
        verify_dir(ctx, ctx.run_dir.stage(r, "samples") / method, d / method, f"round {r} verifying {method}")


def _verified_info(d: epath.Path) -> dict:
    return {"verified": files.summarize([x for m in METHODS for x in read_parts(d / m)])}


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
    return {"train_examples": modes.counts(mix), "sources": sources}


def _finetune_round(ctx: RunContext, r: int, d: epath.Path, init_round: int) -> None:
    init = rundir.model_path(ctx.run_dir.stage(init_round, "checkpoint"))
    finetune.finetune(ctx, d, read_config(init), init, ctx.finetune, ctx.run_dir.stage(r, "train"), seed=r)
