"""The `mmst train` job: fine-tune BLOOM on a SeqIO task or mixture, a JSONL file of {inputs, targets}
text, or the built-in sums, then export the trained model.

    summary = finetune("train.jsonl", "runs/ft", hf_checkpoint="bloom-560m/", train_config=TrainConfig(...))

A run finding checkpoints in its working directory resumes from the newest complete one. At the end
the trained parameters are written to WORKDIR/model (config.json + params/, as `mmst convert`
writes), ready for `mmst convert --to hf` or as the next round's starting point.

Every sequence starts with the start token of the vocabulary (`mmst_jax.vocab.start_id`: EOS,
else BOS), the one the sampler puts before every prompt: the SeqIO task's own output vocabulary,
or the tokenizer. JSONL (and built-in) examples are globally shuffled, every epoch a full seeded
permutation (`training.text_pairs_dataset` with a `shuffle_seed`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from mmst_jax.training.config import TrainConfig

# The built-in default data: 64 sums, prompt and answer (a smoke test that downloads nothing).
DEFAULT_EXAMPLES = tuple({"inputs": f"Q: What is {a} + {b}?\nA:", "targets": f" {a + b}"}
                         for a in range(8) for b in range(8))
SMOKE_CONFIG = TrainConfig(num_steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=5, log_every=10,
                           checkpoint_every=10)


def _mesh(shape: Sequence[int]):
    """A (data, fsdp, tensor) mesh of all devices; one size may be -1 (the remaining devices)."""
    import jax
    import numpy as np

    from mmst_jax import sharding

    shape = list(shape)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh_shape {tuple(shape)}: at most one axis may be -1 (inferred)")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = jax.device_count() // known
    return sharding.make_mesh(shape)


def _task_vocabulary(name: str, tokenizer: str | None):
    """The vocabulary of a SeqIO task's (or mixture's) `targets` feature; without one, the tokenizer's."""
    import seqio

    from mmst_jax.training.config import TrainingDataError
    from mmst_jax.vocab import HFTokenizerVocabulary

    try:
        features = seqio.get_mixture_or_task(name).output_features
    except ValueError as e:
        raise TrainingDataError(f"cannot read SeqIO task or mixture {name!r}: {e}") from e
    if "targets" in features:
        return features["targets"].vocabulary
    if tokenizer is None:
        raise TrainingDataError(f"SeqIO task or mixture {name!r} has no 'targets' feature and no tokenizer "
                                "is given: the start token of its sequences is unknown")
    return HFTokenizerVocabulary(tokenizer)


def finetune(data_file: str | None = None, workdir: str = "runs/train", *,
             mixture_or_task_name: str | None = None, task_feature_lengths: dict | None = None,
             pack: bool = True, model_preset: str = "tiny", hf_checkpoint: str | None = None,
             tokenizer: str | None = None, dtype: str = "bfloat16", param_dtype: str = "float32",
             remat_policy: str = "none", mesh_shape: Sequence[int] = (1, -1, 1),
             train_config: TrainConfig | None = None, export_model: bool = True) -> dict:
    """Fine-tunes and returns a summary (steps, final loss and accuracy, workdir, model path).

    Data: `mixture_or_task_name` (a SeqIO task or mixture, registered by the caller), else
    `data_file` (JSONL of {inputs, targets} text), else the built-in sums. Model: `hf_checkpoint`
    (an HF or orbax model directory) or a randomly initialised `model_preset`. `dtype` is the
    compute dtype and `param_dtype` the storage dtype of parameters and optimizer state
    ('bfloat16' for the largest models). `mesh_shape` is (data, fsdp, tensor); -1 takes the
    remaining devices. `train_config` defaults to SMOKE_CONFIG.
    """
    import jax

    from mmst_jax.models.bloom import BloomConfig
    from mmst_jax.models.orbax import read_config, save_orbax
    from mmst_jax.training.data import read_examples, seqio_dataset, text_pairs_dataset
    from mmst_jax.training.loop import train
    from mmst_jax.vocab import HFTokenizerVocabulary, start_id, train_bpe_tokenizer

    tc = train_config or SMOKE_CONFIG
    lengths = dict(task_feature_lengths or {"inputs": 64, "targets": 64})
    if hf_checkpoint:
        config = read_config(hf_checkpoint)
        tokenizer = tokenizer or hf_checkpoint
    else:
        config = BloomConfig.preset(model_preset)
    config = dataclasses.replace(config, dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy)
    mesh = _mesh(mesh_shape)
    host_batch = tc.batch_size // jax.process_count()

    if mixture_or_task_name:
        start = start_id(_task_vocabulary(mixture_or_task_name, tokenizer))
        data = seqio_dataset(mixture_or_task_name, lengths, host_batch, pack=pack, seed=tc.seed, bos_id=start)
    else:
        examples = read_examples(data_file) if data_file else list(DEFAULT_EXAMPLES)
        if tokenizer is None:
            from etils import epath

            tokenizer = os.path.join(workdir, "tokenizer.json")  # local or gs://
            if not epath.Path(tokenizer).exists():
                texts = [e["inputs"] + e["targets"] for e in examples] * 4
                train_bpe_tokenizer(texts, vocab_size=min(config.vocab_size, 512), path=tokenizer)
        vocab = HFTokenizerVocabulary(tokenizer)
        vocab.check_fits_model(config.vocab_size, f"the model ({hf_checkpoint or model_preset})")
        pairs = [(e["inputs"], e["targets"]) for e in examples]
        shuffled = text_pairs_dataset(pairs, vocab, host=jax.process_index(), hosts=jax.process_count(),
                                      shuffle_seed=tc.seed)
        data = seqio_dataset(shuffled, lengths, host_batch, pack=pack, shuffle=False, seed=tc.seed,
                             bos_id=vocab.start_id)

    last = {}
    state = train(config, hf_checkpoint, data, tc, mesh, workdir,
                  on_step=lambda step, metrics: last.update(step=step, metrics=metrics))
    summary = {"steps": int(state.step), "workdir": workdir,
               "loss": float(last["metrics"]["loss"]) if last else None,
               "accuracy": float(last["metrics"]["accuracy"]) if last else None}
    if export_model:
        summary["model"] = os.path.join(workdir, "model")
        save_orbax(config, state.params, summary["model"])  # every host writes its own shards
    return summary
