"""`mmst sample`: sample completions for prompts and write sample records (docs/architecture.md).

    mmst sample                                   # built-in default: tiny random BLOOM, built-in prompts
    mmst sample --prompts prompts.jsonl --output_dir runs/s --gin.sample.hf_checkpoint="'ckpt/'"
    mmst sample --task gsm8k_text --split train   # a SeqIO task (the gin configurables register them)

A prompts file holds one JSON object a line with `prompt` and optionally `problem_id`, `dataset`,
`method`, `gold`. A SeqIO task's examples give `inputs` (the prompt) and the same metadata. Without
`hf_checkpoint` the model is a randomly initialised preset and the tokenizer is trained on the spot
from the prompts (a smoke test of the whole path, nothing downloaded). The job and its settings
(`--gin.sample.*`) are `mmst_jax.sampling.job.sample`'s.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from mmst_jax.cli import configurables


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst sample", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", help="JSONL of prompts (default: the built-in prompts)")
    parser.add_argument("--task", help="a SeqIO task or mixture to take the prompts from")
    parser.add_argument("--split", default="train", help="the SeqIO task's split (default: train)")
    parser.add_argument("--output_dir", default="runs/sample", help="where the sample records go")
    args = parser.parse_args(argv)
    path = configurables.sample(args.prompts, args.output_dir, task=args.task, split=args.split)
    with open(path) as f:
        count = sum(1 for _ in f)
    print(f"wrote {count} sample records to {path}")
    return 0
