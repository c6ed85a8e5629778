"""Fine-tuning a stage's model on training records: the base model from scratch, and every round.

The model is trained from `init` (a model directory; None: random) on the records of a `train/`
stage and written to `checkpoint/model/` (orbax). The training state lives in `checkpoint/.work`
until the stage is done, so a killed run resumes from its last checkpoint; `remove_work` drops it
once the stage's marker is written. With no records, the stage's model is `init` (`model.json`).

The training examples are all of the stage's records (every method and dataset), in a seeded
global shuffle: every epoch a full permutation of them all, reshuffled each epoch, split over the
hosts after the permutation (`training.text_pairs_dataset` with a `shuffle_seed`). Every sequence
starts with the vocabulary's start token (`mmst_jax.vocab.start_id`: EOS, else BOS), the one the
sampler puts before every prompt.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from etils import epath

from mmst_jax import faults
from mmst_jax.mmst import rundir
from mmst_jax.mmst.stages import RunContext
from mmst_jax.records import METHODS, read_parts, remove, write_json

log = logging.getLogger(__name__)


def finetune(ctx: RunContext, d: epath.Path, config, init: str | None, tc: Any, train_dir: epath.Path, *,
             seed: int) -> None:
    """Trains `config` from `init` on the records of `train_dir` into `d/model`."""
    from mmst_jax import training
    from mmst_jax.models.orbax import save_orbax
    from mmst_jax.vocab import HFTokenizerVocabulary

    if (d / "model" / "config.json").exists() or (d / "model.json").exists():
        return  # written by an earlier run that was stopped before the marker
    records = [x for m in METHODS for x in read_parts(train_dir / m)]
    if not records:
        if init is None:
            raise ValueError(f"{train_dir}: no training records for the base model")
        log.warning("%s: no training records this round; the model stays %s", train_dir, init)
        if ctx.host == 0:
            write_json(d / "model.json", {"path": init, "format": "same-as"})
        return
    vocab = HFTokenizerVocabulary(os.fspath(ctx.tokenizer_path))
    data = training_data(records, vocab, dict(ctx.config.feature_lengths), tc.batch_size // ctx.hosts,
                         seed=tc.seed + seed, host=ctx.host, hosts=ctx.hosts)

    def on_step(step, metrics):
        faults.point("train.step")

    state = training.train(config, init, data, tc, ctx.mesh, os.fspath(d / ".work"), rules=ctx.rules,
                           on_step=on_step)
    save_orbax(config, state.params, d / "model")
    faults.point("export")


def training_data(records: list[dict], vocab, lengths: dict, batch_size: int, *, seed: int, host: int = 0,
                  hosts: int = 1):
    """This host's endless, packed batches (`batch_size` rows) of training records (prompt ->
    completion): every epoch all the records in a permutation seeded by (seed, epoch), host `host`
    of `hosts` taking every `hosts`-th of it; every sequence starts with `vocab.start_id`. A
    deterministic function of the arguments, so `training.BatchIterator` resumes exactly."""
    from mmst_jax import training

    examples = training.text_pairs_dataset([(r["prompt"], r["completion"]) for r in records], vocab,
                                           max_lengths=lengths, host=host, hosts=hosts, shuffle_seed=seed)
    return training.seqio_dataset(examples, lengths, batch_size, pack=True, shuffle=False, seed=seed,
                                  bos_id=vocab.start_id)


def remove_work(run_dir: rundir.RunDir, round_index: int) -> None:
    """Drops a finished checkpoint stage's training state (kept only while the stage runs)."""
    work = run_dir.stage(round_index, "checkpoint") / ".work"
    if work.exists() and rundir.stage_state(run_dir.stage(round_index, "checkpoint")).done:
        remove(work)  # local or gs://
