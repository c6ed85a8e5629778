"""Fine-tuning BLOOM: input batches, loss, optimizer, the sharded train step and the training loop.

    data = BatchIterator(seqio_dataset("my_task", {"inputs": 256, "targets": 256}, batch_size=32))
    state = train(config, params, data, TrainConfig(num_steps=1000), mesh, "runs/ft")

Modules, one job each:
  config       TrainConfig (optimizer, schedule, batch, accumulation, checkpoints) and TrainingDataError
  data         text pairs -> token ids (text_pairs_dataset) -> batches (seqio_dataset), BatchIterator
  step         loss, optimizer, TrainState and its shardings, the jitted step (training_program) and
               the same step lowered for planning (lower_train_step)
  loop         train(): restore or initialise, step, checkpoint, log
  throughput   tokens/s and MFU
  checkpoints  orbax checkpoints of the train state and the data position
  finetune     the `mmst train` job: model, data (SeqIO task, JSONL or built-in sums), train, export
"""

from mmst_jax.training.config import TrainConfig, TrainingDataError
from mmst_jax.training.data import FEATURES, BatchIterator, read_examples, seqio_dataset, text_pairs_dataset
from mmst_jax.training.loop import train
from mmst_jax.training.step import (Program, TrainState, abstract_state, batch_sharding, example_losses,
                                   init_state, learning_rate_schedule, lower_train_step, make_optimizer,
                                   model_inputs, state_shardings, token_losses, train_step, training_program,
                                   weight_decay_mask)
from mmst_jax.training.throughput import KNOWN_PEAK_FLOPS, Throughput, device_peak_flops, model_flops_per_token

__all__ = [
    "FEATURES", "KNOWN_PEAK_FLOPS", "BatchIterator", "Program", "Throughput", "TrainConfig", "TrainState",
    "TrainingDataError", "abstract_state", "batch_sharding", "device_peak_flops", "example_losses", "init_state",
    "learning_rate_schedule", "lower_train_step", "make_optimizer", "model_flops_per_token", "model_inputs",
    "read_examples", "seqio_dataset", "state_shardings", "text_pairs_dataset", "token_losses", "train",
    "train_step", "training_program", "weight_decay_mask",
]
