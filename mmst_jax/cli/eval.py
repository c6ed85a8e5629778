"""`mmst eval`: evaluate any checkpoint on any tasks (accuracy, maj@k, overlap of the methods).

    mmst eval --model runs/smoke/round_003/checkpoint --tasks synthetic_text,synthetic_code
    mmst eval --model path/to/bloom-7b1 --tasks gsm8k_text,gsm8k_code,strategyqa_text \\
              --gin.tasks.data_dir.path="'../shared/data'" --output runs/eval-7b1 --vote_samples 8

`--model` is an orbax model directory (`mmst convert --to orbax`), an HF BLOOM directory, or a
run's `round_NNN/checkpoint/` stage. The tokenizer is `--tokenizer`, else the model directory's own
tokenizer.json, else the run's (round_000/checkpoint/tokenizer.json); the tasks fit their prompts
with it. Tasks are SeqIO tasks (`mmst tasks` lists them); their `test` split is sampled greedily
(and `--vote_samples` times for maj@k), verified, and summarised in OUTPUT/summary.json, which is
also printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Sequence

import gin
from etils import epath


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
    parser.add_argument("--allow_unprotected", action="store_true",
                        help="run model-written code even where the sandbox lacks a protection (loudly)")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, force=True)
    from mmst_jax.mmst.evaluate import evaluate_model
    from mmst_jax.sampling.prompts import read_task

    names = [t for t in args.tasks.split(",") if t]
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.model)), "eval-" + "-".join(names))
    model = epath.Path(args.model)
    tokenizer = _tokenizer_for(model, args.tokenizer)
    with gin.unlock_config():  # the tasks fit their prompts with the model's tokenizer
        gin.bind_parameter("tasks.tokenizer.path", tokenizer)
    prompt_sets = [(name, read_task(name, args.split)) for name in names]
    summary = evaluate_model(_model_dir(model), tokenizer, prompt_sets, output, limit=args.limit,
                             vote_samples=args.vote_samples, max_new_tokens=args.max_new_tokens,
                             batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
                             allow_unprotected=args.allow_unprotected)
    print(json.dumps(summary, sort_keys=True))
    return 0
