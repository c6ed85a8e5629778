"""Round 0: the base model, before any self-training.

From published weights, `checkpoint/` holds the tokenizer and `model.json` naming the HF
checkpoint. From scratch, `train/` holds the bootstrap corpus (the configured bootstrap task's
records), then `checkpoint/` a byte-level BPE tokenizer of the model's vocabulary size trained on
that corpus and the model trained on it. Either way round 0 is then evaluated like every round.
"""

from __future__ import annotations

import hashlib
import json
import os

from etils import epath

from mmst_jax.distributed import barrier
from mmst_jax.mmst import evaluate, finetune, rundir
from mmst_jax.mmst.stages import RunContext
from mmst_jax.records import METHODS, part_name, read_parts, write_json, write_jsonl, write_text


def base_round(ctx: RunContext) -> None:
    train_digest = None
    if ctx.base.hf_checkpoint is None:
        from mmst_jax.mmst.problems import bootstrap_records

        if ctx.tasks.bootstrap is None:
            raise ValueError("the base model is neither an HF checkpoint (mmst.Base.hf_checkpoint) nor trained "
                             "from scratch on a bootstrap task (mmst.Tasks.bootstrap): give one of them")
        corpus = bootstrap_records(ctx.tasks.bootstrap)

        def write_corpus(d):
            if ctx.host == 0:
                for method in METHODS:
                    write_jsonl(d / method / part_name(0, 1), [r for r in corpus if r["method"] == method])

        def corpus_info(d):
            return {"train_examples": {m: sum(1 for r in corpus if r["method"] == m) for m in METHODS}}

        corpus_digest = hashlib.sha256(json.dumps(corpus, sort_keys=True).encode()).hexdigest()
        train_digest = ctx.stages.run(0, "train", rundir.combine("bootstrap", corpus_digest), write_corpus,
                                      corpus_info)["digest"]
    # The base model is a function of its training data and of these settings.
    recipe = json.dumps({"hf": ctx.base.hf_checkpoint, "preset": ctx.base.model_preset,
                         "policy": repr(ctx.config.policy) if ctx.base.hf_checkpoint is None else None,
                         "overrides": dict(ctx.base.model_overrides), "train": repr(ctx.base.train),
                         "lengths": dict(ctx.config.feature_lengths)}, sort_keys=True)
    ctx.stages.run(0, "checkpoint", rundir.combine(train_digest, recipe), lambda d: _base_checkpoint(ctx, d),
                   lambda d: {"model": rundir.model_path(d)}, hash_contents=False)
    ctx.check_programs()  # with the run's tokenizer: the real prompts, before the first sample
    evaluate.evaluate_round(ctx, 0)


def _base_checkpoint(ctx: RunContext, d: epath.Path) -> None:
    if ctx.base.hf_checkpoint is not None:
        if ctx.host == 0:
            source = epath.Path(ctx.base.tokenizer or ctx.base.hf_checkpoint)
            if source.is_dir():
                source = source / "tokenizer.json"
            write_text(d / "tokenizer.json", source.read_text())
            write_json(d / "model.json", {"path": os.fspath(ctx.base.hf_checkpoint), "format": "hf"})
        return
    from mmst_jax.vocab import train_bpe_tokenizer

    config = ctx.model_config()
    train_dir = ctx.run_dir.stage(0, "train")
    if ctx.host == 0 and not (d / "tokenizer.json").exists():
        records = read_parts(train_dir / "text") + read_parts(train_dir / "code")
        train_bpe_tokenizer([r["prompt"] + r["completion"] for r in records], vocab_size=config.vocab_size,
                            path=d / "tokenizer.json")
    barrier(f"{d}:tokenizer")
    finetune.finetune(ctx, d, config, None, ctx.base.train, train_dir, seed=0)
