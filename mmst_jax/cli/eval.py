"""`mmst eval`: evaluate any checkpoint on any tasks (accuracy, maj@k, overlap of the methods).

    mmst eval --model runs/smoke/round_003/checkpoint --tasks synthetic_text,synthetic_code
    mmst eval --model path/to/bloom-7b1 --tasks gsm8k_text,gsm8k_code,strategyqa_text \\
              --gin.tasks.data_dir.path="'../shared/data'" --output runs/eval-7b1 --vote_samples 8

`--model` is an orbax model directory (`mmst convert --to orbax`), an HF BLOOM directory, or a
run's `round_NNN/checkpoint/` stage. The tokenizer is `--tokenizer`, else the model directory's own
tokenizer.json, else the run's (round_000/checkpoint/tokenizer.json). Tasks are SeqIO tasks
(`mmst tasks` lists them); their `test` split is sampled greedily (and `--vote_samples` times for
maj@k), verified, and summarised in OUTPUT/summary.json, which is also printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Sequence

from etils import epath

from mmst_jax.cli import configurables  # noqa: F401  (registers the tasks.* configurables)
from mmst_jax.records import part_name, read_jsonl, write_json
from mmst_jax.distributed import host_info
from mmst_jax.models.orbax import load_model


def _tokenizer_for(model: epath.Path, given: str | None) -> str:
    if given:
        return given
    for candidate in (model / "tokenizer.json", model.parent / "tokenizer.json",
                      model.parent.parent / "round_000" / "checkpoint" / "tokenizer.json",
                      model.parent.parent.parent / "round_000" / "checkpoint" / "tokenizer.json"):
        if candidate.exists():
            return os.fspath(candidate)
    raise FileNotFoundError(f"no tokenizer.json found for {model}: pass --tokenizer PATH")


def _model_dir(model: epath.Path) -> str:
    """The model directory of a run's checkpoint stage (model/ or model.json), or `model` itself."""
    from mmst_jax.mmst import rundir

    if (model / "model").exists() or (model / "model.json").exists():
        return rundir.model_path(model)
    if not model.exists():
        raise FileNotFoundError(f"model directory {model} does not exist")
    return os.fspath(model)


def evaluate_model(model_dir: str, task_names: Sequence[str], output: str, *, tokenizer: str | None = None,
                   split: str = "test", limit: int = 0, vote_samples: int = 0, vote_temperature: float = 0.8,
                   max_new_tokens: int = 256, batch_size: int = 32, seed: int = 0, progress: bool = True) -> dict:
    """Samples, verifies and summarises; returns {"eval": ..., "overlap": ...}."""
    from mmst_jax.mmst import evaluate, rundir
    from mmst_jax.sampling import generate
    from mmst_jax.verify import files
    from mmst_jax.cli.sample import read_task

    out = epath.Path(output)
    model_path = epath.Path(model_dir)
    tokenizer = _tokenizer_for(model_path, tokenizer)
    import gin

    with gin.unlock_config():
        gin.bind_parameter("tasks.tokenizer.path", tokenizer)
    model = load_model(_model_dir(model_path), tokenizer)
    greedy, vote = [], []
    for name in task_names:
        prompts = read_task(name, split)
        per_dataset: dict[str, int] = {}
        kept = []
        for p in prompts:
            per_dataset[p["dataset"]] = per_dataset.get(p["dataset"], 0) + 1
            if not limit or per_dataset[p["dataset"]] <= limit:
                kept.append(p)
        kinds = [("greedy", 0.0, 1)] + ([("vote", vote_temperature, vote_samples)] if vote_samples else [])
        for kind, temperature, k in kinds:
            samples = out / "samples" / f"{kind}_{name}"
            generate.generate_records(kept, samples, model, temperature=temperature, num_samples=k, seed=seed,
                                      round_index=0, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      progress=progress, desc=f"eval {kind} {name}")
            part = part_name(*host_info())
            verified = files.verify_part(samples / part, out / "verified" / f"{kind}_{name}" / part,
                                                progress=progress)
            (greedy if kind == "greedy" else vote).extend(read_jsonl(verified))
    summary = {"model": os.fspath(model_dir), "tasks": list(task_names), "eval": evaluate.accuracy(greedy, vote),
               "overlap": evaluate.overlap(greedy)}
    write_json(out / "summary.json", summary)
    return summary


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst eval", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="orbax or HF model directory, or a run's checkpoint stage")
    parser.add_argument("--tasks", required=True, help="comma-separated SeqIO task names")
    parser.add_argument("--output", default=None, help="where samples and summary.json go (default: "
                                                          "MODEL/../eval-TASKS)")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="problems per dataset (0: all)")
    parser.add_argument("--vote_samples", type=int, default=0, help="samples per problem for maj@k (0: none)")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, force=True)
    names = [t for t in args.tasks.split(",") if t]
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.model)), "eval-" + "-".join(names))
    summary = evaluate_model(args.model, names, output, tokenizer=args.tokenizer, split=args.split, limit=args.limit,
                             vote_samples=args.vote_samples, max_new_tokens=args.max_new_tokens,
                             batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    print(json.dumps(summary, sort_keys=True))
    return 0
