"""Evaluation: a round's `eval/` stage, and any model on any tasks (`mmst eval`).

Test prompts are sampled greedily (accuracy) and, if `vote_samples` > 0, that many times at
`vote_temperature` (maj@k), verified, and summarised (mmst_jax.mmst.metrics) in `summary.json`: accuracy and maj@k, the
overlap of the methods' solved problems, and the cross-method oracle, pooled vote and per-problem
choice (`cross`; in a round, the choice's prior is the round's own verified training samples).
"""

from __future__ import annotations

import os
from typing import Sequence

from etils import epath

from mmst_jax.distributed import host_info
from mmst_jax.mmst import metrics, rundir
from mmst_jax.mmst.stages import RunContext, seed_for, select_by_dataset
from mmst_jax.models.orbax import load_model
from mmst_jax.records import METHODS, part_name, read_jsonl, read_parts, write_json
from mmst_jax.sampling.records import generate_records
from mmst_jax.verify import files


def evaluate_round(ctx: RunContext, r: int) -> dict:
    return ctx.stages.run(r, "eval", rundir.combine(ctx.stages.digest(r, "checkpoint")),
                          lambda d: _eval(ctx, r, d), _summary)


def eval_sets(ctx: RunContext) -> list[tuple[str, list[dict]]]:
    """(method, test prompts) per method: `eval_problems` per dataset (0: all); the text method
    also answers the related problems."""
    prompts = ctx.prompts()
    n = ctx.config.eval_problems
    sets = []
    for method in METHODS:
        chosen = select_by_dataset(prompts.test[method], n)
        if method == "text" and prompts.related:
            chosen += select_by_dataset(prompts.related, n)
        sets.append((method, chosen))
    return sets


def _eval(ctx: RunContext, r: int, d: epath.Path) -> None:
    from mmst_jax.mmst.rounds import sample_settings, verify_dir

    g = ctx.config.generation
    model = ctx.model(r)
    for method, prompts in eval_sets(ctx):
        kinds = [("greedy", 0.0, 1)] + ([("vote", g.vote_temperature, g.vote_samples)] if g.vote_samples else [])
        for kind, temperature, k in kinds:
            name = f"{kind}_{method}"
            generate_records(prompts, d / "samples" / name, model, temperature=temperature, num_samples=k,
                                      seed=seed_for(g.seed, r, f"eval/{name}"), round_index=r,
                                      desc=f"round {r} eval {kind} {method}", **sample_settings(ctx))
            verify_dir(ctx, d / "samples" / name, d / "verified" / name, f"round {r} eval verifying {name}")


def _summary(d: epath.Path) -> dict:
    greedy, vote = [], []
    for method in METHODS:
        greedy += read_parts(d / "verified" / f"greedy_{method}")
        if (d / "verified" / f"vote_{method}").exists():
            vote += read_parts(d / "verified" / f"vote_{method}")
    training = d.parent / "verified"  # the round's own verified training samples (none in round 0)
    prior = metrics.training_rates([x for m in METHODS for x in read_parts(training / m)]) if training.exists() else {}
    summary = {"eval": metrics.accuracy(greedy, vote), "overlap": metrics.overlap(greedy),
               "cross": metrics.cross_method(greedy, vote, prior),
               "lost": sum(1 for x in greedy + vote if x.get("lost"))}
    write_json(d / "summary.json", summary)
    return summary


def evaluate_model(model_dir: str, tokenizer: str, prompt_sets: Sequence[tuple[str, list[dict]]], output: str, *,
                   limit: int = 0, vote_samples: int = 0, vote_temperature: float = 0.8, max_new_tokens: int = 256,
                   batch_size: int = 32, seed: int = 0, progress: bool = True,
                   allow_unprotected: bool = False) -> dict:
    """Samples, verifies and summarises a model directory on named prompt sets (a task's test
    prompts each); returns {"eval": ..., "overlap": ...}, also written to OUTPUT/summary.json."""
    out = epath.Path(output)
    model = load_model(model_dir, tokenizer)
    part = part_name(*host_info())
    greedy, vote = [], []
    for name, prompts in prompt_sets:
        kept = select_by_dataset(prompts, limit, grouped=False)
        kinds = [("greedy", 0.0, 1)] + ([("vote", vote_temperature, vote_samples)] if vote_samples else [])
        for kind, temperature, k in kinds:
            samples = out / "samples" / f"{kind}_{name}"
            generate_records(kept, samples, model, temperature=temperature, num_samples=k, seed=seed,
                                      round_index=0, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      progress=progress, desc=f"eval {kind} {name}")
            verified = files.verify_part(samples / part, out / "verified" / f"{kind}_{name}" / part,
                                         progress=progress, allow_unprotected=allow_unprotected)
            (greedy if kind == "greedy" else vote).extend(read_jsonl(verified))
    summary = {"model": os.fspath(model_dir), "tasks": [name for name, _ in prompt_sets],
               "eval": metrics.accuracy(greedy, vote), "overlap": metrics.overlap(greedy),
               "cross": metrics.cross_method(greedy, vote)}
    write_json(out / "summary.json", summary)
    return summary
