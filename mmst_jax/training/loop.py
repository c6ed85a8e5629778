"""The training loop: `train` runs a model from its initial parameters (or its newest checkpoint) to
the last step, saving checkpoints and logging metrics to TensorBoard and the log on the way.

    data = BatchIterator(seqio_dataset("my_task", {"inputs": 256, "targets": 256}, batch_size=32))
    state = train(config, params, data, TrainConfig(num_steps=1000), mesh, "runs/ft")
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from typing import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.orbax import load_model_dir, read_config
from mmst_jax.sharding import DEFAULT_RULES, validate_rules
from mmst_jax.training import checkpoints as ckpt_lib
from mmst_jax.training.config import TrainConfig, TrainingDataError
from mmst_jax.training.data import FEATURES, BatchIterator
from mmst_jax.training.step import (Program, TrainState, abstract_state, init_state, learning_rate_schedule,
                                   training_program)
from mmst_jax.training.throughput import Throughput

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """What the loop needs besides the train state: the model, settings, compiled program, data,
    where it writes, and the caller's per-step hook."""

    config: BloomConfig
    tc: TrainConfig
    program: Program
    data: BatchIterator
    mesh: Mesh
    rules: tuple
    workdir: str | None = None
    checkpoints: ckpt_lib.Checkpoints | None = None
    on_step: Callable[[int, dict], None] | None = None

    def save(self, step: int, state: TrainState) -> None:
        """A checkpoint of `state` at `step`, with the model and the data position."""
        meta = {"model": ckpt_lib.model_meta(self.config), "data": self.data.get_state()}
        self.checkpoints.save(step, state.to_dict(), meta)


def train(config: BloomConfig, init, data, tc: TrainConfig, mesh: Mesh, workdir: str | None, *,
          rules=DEFAULT_RULES, stop_at_step: int | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> TrainState:
    """Trains `config` from `init` on `data` (a BatchIterator or a tf.data dataset of batches).

    `init` is a params tree, a model directory (orbax, as `mmst convert` writes, or HF), or None
    for random parameters. With a `workdir`, checkpoints go to `workdir/checkpoints` and
    TensorBoard events to `workdir/tensorboard`; a run finding a checkpoint there resumes from it
    (state, data position and RNG; `init` is then unused), so a run stopped at any point and
    started again ends exactly where one uninterrupted run would. `stop_at_step` stops (with a
    checkpoint) before `tc.num_steps`, keeping the schedule of `tc.num_steps`.
    `on_step(step, metrics)` is called after every step with its metrics (jax scalars).
    """
    if not isinstance(data, BatchIterator):
        data = BatchIterator(data)
    rules = validate_rules(rules)
    dp = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    if (tc.batch_size // tc.micro_batches) % dp:
        raise ValueError(f"micro-batch size {tc.batch_size // tc.micro_batches} is not divisible by the "
                         f"{dp} data-parallel devices of mesh {dict(mesh.shape)}")
    run = Run(config, tc, training_program(config, tc, mesh, rules), data, mesh, rules, workdir, on_step=on_step)
    if workdir is not None:
        run.checkpoints = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"), save_every=tc.checkpoint_every,
                                               keep=tc.keep_checkpoints, async_save=tc.async_checkpoints)
    try:
        return _train(run, init, stop_at_step)
    finally:
        if run.checkpoints is not None:
            run.checkpoints.close()


def _train(run: Run, init, stop_at_step: int | None) -> TrainState:
    """Restores or initialises the state, runs the loop to the end step and saves the last checkpoint."""
    config, tc, program = run.config, run.tc, run.program
    abstract = abstract_state(config, program.optimizer, program.shardings).to_dict()
    restored = run.checkpoints.restore(abstract, config) if run.checkpoints else None
    if restored:
        step0, state_dict, meta = restored
        state = TrainState.from_dict(state_dict)
        run.data.set_state(meta["data"])
        log.info("resuming from %s at step %d", run.checkpoints.directory / str(step0), step0)
    start, end = int(restored[0]) if restored else 0, min(tc.num_steps, stop_at_step or tc.num_steps)
    if start >= end:
        return state
    first = _next_batch(run, start)  # an empty dataset fails here, before any model is built
    if not restored:
        state = init_state(config, _initial_params(run, init), program.optimizer, program.shardings, tc.seed)
    batches = itertools.chain([first], (_next_batch(run, step) for step in itertools.count(start + 1)))
    state = _loop(run, state, batches, start, end)
    if run.checkpoints is not None and run.checkpoints.last_saved_step != end:
        run.save(end, state)
    return state


def _initial_params(run: Run, init):
    """`init` is a params tree, None (random), or a model directory (orbax or HF safetensors), read
    straight onto the mesh (each host only its devices' slices)."""
    if init is None:
        return run.program.init_params(jax.random.key(run.tc.seed))
    if not isinstance(init, (str, os.PathLike)):
        return init
    path = os.fspath(init)
    theirs, ours = ckpt_lib.architecture(read_config(path)), ckpt_lib.architecture(run.config)
    if theirs != ours:
        raise ckpt_lib.CheckpointError(
            f"{path} holds a model of another architecture ({theirs}) than the one configured ({ours}): "
            "configure the model it holds")
    return load_model_dir(path, mesh=run.mesh, rules=run.rules)[1]


def _next_batch(run: Run, step: int) -> dict[str, np.ndarray]:
    """The next host batch of model features, checked to have the configured number of rows."""
    tc = run.tc
    try:
        batch = next(run.data)
    except StopIteration:
        raise TrainingDataError(f"the training data ran out after {run.data.get_state()['position']} batches "
                                f"(step {step} of {tc.num_steps}): it is empty or too short; "
                                "repeat it, add examples, or lower num_steps/batch_size") from None
    rows = batch["decoder_input_tokens"].shape[0]
    if rows * jax.process_count() != tc.batch_size:
        raise TrainingDataError(f"the data gives batches of {rows} rows per host; TrainConfig.batch_size "
                                f"is {tc.batch_size} over {jax.process_count()} host(s)")
    return {k: v for k, v in batch.items() if k in FEATURES or k == "decoder_segment_ids"}


def _loop(run: Run, state: TrainState, batches: Iterator[dict], start: int, end: int) -> TrainState:
    """Steps `start` to `end`: checkpoints on the way (not the last), metrics every `log_every`."""
    from tqdm import tqdm

    tc = run.tc
    schedule = learning_rate_schedule(tc)
    is_main = jax.process_index() == 0
    writer = None
    if run.workdir is not None and is_main:
        from mmst_jax import storage

        writer = storage.summary_writer(os.path.join(run.workdir, "tensorboard"))  # local or gs://
    throughput = Throughput(run.config, tc)
    bar = tqdm(total=end, initial=start, desc="training", unit="step", disable=not (tc.progress_bar and is_main))
    try:
        for step, batch in zip(range(start, end), batches):
            length = batch["decoder_input_tokens"].shape[1]
            batch = {k: jax.make_array_from_process_local_data(run.program.batch_sharding, v) for k, v in batch.items()}
            state, metrics = run.program.step(state, batch)
            done = step + 1
            throughput.step()
            if run.checkpoints is not None and done < end and run.checkpoints.should_save(done):
                run.save(done, state)
            if run.on_step is not None:
                run.on_step(done, metrics)
            bar.update(1)
            if done % tc.log_every and done != end:
                continue
            host = {k: float(v) for k, v in jax.device_get(metrics).items()}
            host.update(throughput.measure(length))
            host["learning_rate"] = float(schedule(step))
            if writer is not None:
                for name, value in host.items():
                    writer.add_scalar(f"train/{name}", value, done)
                writer.flush()
            bar.set_postfix(loss=f"{host['loss']:.4f}", acc=f"{host['accuracy']:.3f}")
            log.info("step %d: %s", done, ", ".join(f"{k} {v:.4g}" for k, v in sorted(host.items())))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return state
