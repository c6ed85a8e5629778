"""`mmst train`: fine-tune BLOOM on a SeqIO task or mixture, or on a JSONL file of {inputs, targets}.

    mmst train                                    # built-in default: tiny random BLOOM, built-in sums
    mmst train --gin_file=train.gin --gin.MIXTURE_OR_TASK_NAME="'my_mixture'" --gin.MODEL_DIR="'runs/ft'"
    mmst train --data train.jsonl --workdir runs/ft --gin.train.hf_checkpoint="'bloom-560m/'"

Settings are gin bindings of `train.*` (data, model, dtype policy, mesh) and `TrainConfig.*`
(optimizer, schedule, batch, accumulation, checkpoints); `gin_configs/train.gin` lists them. A run
finding checkpoints in its working directory resumes from the newest complete one. At the end the
trained parameters are written to WORKDIR/model (config.json + params/, as `mmst convert` writes),
ready for `mmst convert --to hf` or as the next round's starting point.
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

import gin

from mmst_jax.records import read_jsonl
from mmst_jax.training import TrainConfig

gin.external_configurable(TrainConfig, name="TrainConfig")

# The built-in default data: 64 sums, prompt and answer (a smoke test that downloads nothing).
DEFAULT_EXAMPLES = tuple({"inputs": f"Q: What is {a} + {b}?\nA:", "targets": f" {a + b}"}
                         for a in range(8) for b in range(8))
SMOKE_CONFIG = TrainConfig(num_steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=5, log_every=10,
                           checkpoint_every=10)


def _check_example(record: dict) -> None:
    if not (isinstance(record.get("inputs"), str) and isinstance(record.get("targets"), str)):
        raise ValueError("each line must be an object with string 'inputs' and 'targets'")


def read_examples(path: str) -> list[dict[str, str]]:
    """A JSONL file whose every line is an object with string `inputs` and `targets`."""
    examples = [{"inputs": r["inputs"], "targets": r["targets"]} for r in read_jsonl(path, _check_example)]
    if not examples:
        raise ValueError(f"{path} holds no examples: nothing to train on")
    return examples


def _text_dataset(examples, vocab):
    """A tf.data dataset of token ids from text examples (targets end with EOS, as SeqIO appends it)."""
    import numpy as np
    import tensorflow as tf

    inputs = vocab.encode_batch([e["inputs"] for e in examples])
    targets = vocab.encode_batch([e["targets"] for e in examples])
    eos = [] if vocab.eos_id is None else [vocab.eos_id]
    rows = [{"inputs": np.asarray(i, np.int32), "targets": np.asarray(t + eos, np.int32)}
            for i, t in zip(inputs, targets)]
    spec = {"inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)}
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=spec)


def _mesh(shape: Sequence[int]):
    import jax
    import numpy as np

    from mmst_jax.sharding import make_mesh

    shape = list(shape)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh_shape {tuple(shape)}: at most one axis may be -1 (inferred)")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = jax.device_count() // known
    return make_mesh(shape)


@gin.configurable(denylist=["data_file"])
def train(data_file: str | None = None, workdir: str = "runs/train", *,
          mixture_or_task_name: str | None = None, task_feature_lengths: dict | None = None,
          pack: bool = True, model_preset: str = "tiny", hf_checkpoint: str | None = None,
          tokenizer: str | None = None, dtype: str = "bfloat16", param_dtype: str = "float32",
          remat_policy: str = "none", mesh_shape: Sequence[int] = (1, -1, 1),
          train_config: TrainConfig | None = None, export_model: bool = True) -> dict:
    """Fine-tunes and returns a summary (steps, final metrics, paths).

    Data: `mixture_or_task_name` (a registered SeqIO task or mixture), else `data_file` (JSONL of
    {inputs, targets} text), else the built-in sums. Model: `hf_checkpoint` (an HF or orbax model
    directory) or a randomly initialised `model_preset`. `dtype` is the compute dtype and
    `param_dtype` the storage dtype of parameters and optimizer state ('bfloat16' for the largest
    models). `mesh_shape` is (data, fsdp, tensor); -1 takes the remaining devices.
    """
    import dataclasses

    import jax

    from mmst_jax import training
    from mmst_jax.models.bloom import BloomConfig
    from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

    tc = train_config or SMOKE_CONFIG
    lengths = dict(task_feature_lengths or {"inputs": 64, "targets": 64})
    if hf_checkpoint:
        if os.path.isdir(os.path.join(hf_checkpoint, "params")):
            config = BloomConfig.from_hf(os.path.join(hf_checkpoint, "config.json"))
        else:
            config = BloomConfig.from_hf(hf_checkpoint)
        tokenizer = tokenizer or hf_checkpoint
    else:
        config = BloomConfig.preset(model_preset)
    config = dataclasses.replace(config, dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy)
    mesh = _mesh(mesh_shape)
    host_batch = tc.batch_size // jax.process_count()

    if mixture_or_task_name:
        import tasks  # noqa: F401  (registers the project's SeqIO tasks and mixtures)

        bos = config.bos_token_id or 0
        data = training.seqio_dataset(mixture_or_task_name, lengths, host_batch, pack=pack, seed=tc.seed, bos_id=bos)
    else:
        examples = read_examples(data_file) if data_file else list(DEFAULT_EXAMPLES)
        if tokenizer is None:
            tokenizer = os.path.join(workdir, "tokenizer.json")
            if not os.path.exists(tokenizer):
                texts = [e["inputs"] + e["targets"] for e in examples] * 4
                train_bpe_tokenizer(texts, vocab_size=min(config.vocab_size, 512), path=tokenizer)
        vocab = HFTokenizerVocabulary(tokenizer)
        vocab.check_fits_model(config.vocab_size, f"the model ({hf_checkpoint or model_preset})")
        data = training.seqio_dataset(_text_dataset(examples, vocab), lengths, host_batch, pack=pack, seed=tc.seed,
                                      bos_id=vocab.bos_id or 0)

    last = {}
    state = training.train(config, hf_checkpoint, data, tc, mesh, workdir,
                           on_step=lambda step, metrics: last.update(step=step, metrics=metrics))
    summary = {"steps": int(state.step), "workdir": workdir,
               "loss": float(last["metrics"]["loss"]) if last else None,
               "accuracy": float(last["metrics"]["accuracy"]) if last else None}
    if export_model:
        from mmst_jax.models.orbax import save_orbax

        summary["model"] = os.path.join(workdir, "model")
        save_orbax(config, state.params, summary["model"])  # every host writes its own shards
    return summary


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="JSONL of {inputs, targets} (default: gin's task, else built-in sums)")
    parser.add_argument("--workdir", help="checkpoints, TensorBoard events and the final model go here")
    args = parser.parse_args(argv)
    kwargs = {"workdir": args.workdir} if args.workdir else {}
    summary = train(args.data, **kwargs)
    loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
    print(f"trained to step {summary['steps']} (last loss {loss}); checkpoints and TensorBoard events in "
          f"{summary['workdir']}" + (f"; model written to {summary['model']}" if "model" in summary else ""))
    return 0
