"""Fine-tuning BLOOM: input batches, loss, optimizer, the sharded train step and the training loop.

    data = BatchIterator(seqio_dataset("my_task", {"inputs": 256, "targets": 256}, batch_size=32))
    state = train(config, params, data, TrainConfig(num_steps=1000), mesh, "runs/ft")

Batches come from SeqIO's DecoderFeatureConverter over `{inputs, targets}` examples: the model reads
`decoder_input_tokens` (the concatenation shifted right) and is scored on `decoder_target_tokens`
with `decoder_loss_weights`, which are 1 on target tokens only (the prompt is masked out). Packed
batches also carry `decoder_segment_ids`, which the model turns into attention that never crosses
examples and ALiBi positions that restart per example, so packing does not change any example's
loss. Attention is causal everywhere (BLOOM is a causal LM); `decoder_causal_attention` is unused.

The loss is the mean cross-entropy over all target tokens of the global batch (plus an optional
z-loss), so gradient accumulation over micro-batches computes the same gradient as one big batch.
Compute dtype and parameter dtype come from the BloomConfig (`dtype`, `param_dtype`); the optimizer
state takes the parameters' dtype, and the loss, softmax and gradient accumulation are fp32.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import time
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmst_jax.training import checkpoints as ckpt_lib
from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, init_params
from mmst_jax.sharding import DEFAULT_RULES, logical_to_sharding, param_logical_specs, place

log = logging.getLogger(__name__)

FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
# Dense bf16 peak FLOP/s per device, for the MFU estimate (`TrainConfig.peak_flops` overrides).
KNOWN_PEAK_FLOPS = {"TPU v2": 45e12, "TPU v3": 123e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
                    "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12,
                    "NVIDIA A100": 312e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12}


class DataError(ValueError):
    """Input data that cannot train the model; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings. `batch_size` counts rows (packed or not) per optimizer step."""

    num_steps: int = 1000
    batch_size: int = 8
    micro_batches: int = 1  # gradient accumulation: the batch is split into this many parts
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    decay: str = "cosine"  # cosine | linear | constant, from the peak to end_learning_rate
    end_learning_rate: float = 0.0
    weight_decay: float = 0.0  # AdamW's; never applied to LayerNorm scales or to biases
    adam_b1: float = 0.9
    adam_b2: float = 0.95
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # global-norm clipping; 0 turns it off
    z_loss: float = 0.0  # weight of log(Z)^2 on target tokens (PaLM's auxiliary loss)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    peak_flops: float | None = None  # per device, for MFU; None: KNOWN_PEAK_FLOPS by device kind
    progress_bar: bool = True

    def __post_init__(self):
        for name in ("num_steps", "batch_size", "micro_batches", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batches:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by micro_batches "
                             f"{self.micro_batches}: every micro-batch must have the same size")
        if self.decay not in ("cosine", "linear", "constant"):
            raise ValueError(f"TrainConfig.decay={self.decay!r}; choose cosine, linear or constant")
        if self.warmup_steps < 0 or self.warmup_steps > self.num_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must lie in [0, num_steps={self.num_steps}]")
        if self.learning_rate <= 0 or self.max_grad_norm < 0 or self.z_loss < 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0; max_grad_norm, z_loss and weight_decay >= 0")


# --------------------------------------------------------------------------------------------
# Input: SeqIO tasks or tf.data datasets of {inputs, targets} -> batches of model features
# --------------------------------------------------------------------------------------------
def seqio_dataset(source, feature_lengths: Mapping[str, int], batch_size: int, *, pack: bool = True,
                  shuffle: bool = True, seed: int = 0, split: str = "train", bos_id: int = 0,
                  repeat: bool = True):
    """Batches of model features (tf.data) from a SeqIO task/mixture name or a tf.data dataset.

    A dataset must yield `inputs` and `targets` as int32 token ids; they are trimmed to
    `feature_lengths`. `batch_size` is this host's rows per batch (the global batch divided by the
    number of hosts; each host reads its own shard of a SeqIO task). Output order is a
    deterministic function of `seed`, which is what lets `BatchIterator` resume exactly.
    """
    import seqio
    import tensorflow as tf

    lengths = {"inputs": int(feature_lengths["inputs"]), "targets": int(feature_lengths["targets"])}
    converter = seqio.DecoderFeatureConverter(pack=pack, bos_id=bos_id)
    if isinstance(source, str):
        shard = seqio.ShardInfo(jax.process_index(), jax.process_count())
        try:
            ds = seqio.get_dataset(source, lengths, converter, dataset_split=split, shuffle=shuffle,
                                   num_epochs=None if repeat else 1, shard_info=shard, seed=seed)
        except ValueError as e:
            raise DataError(f"cannot read SeqIO task or mixture {source!r}: {e}") from e
    elif isinstance(source, tf.data.Dataset):
        spec = source.element_spec
        if not isinstance(spec, dict) or not {"inputs", "targets"} <= set(spec):
            raise DataError("a training dataset must yield dicts with 'inputs' and 'targets' token ids, "
                            f"got {spec}")
        ds = source.map(lambda ex: {k: tf.cast(ex[k], tf.int32)[:lengths[k]] for k in ("inputs", "targets")})
        if repeat:
            ds = ds.repeat()
        if shuffle:
            ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
        ds = converter(ds, lengths)
    else:
        raise DataError(f"training data must be a SeqIO task/mixture name or a tf.data.Dataset, "
                        f"got {type(source).__name__}")
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


class BatchIterator:
    """Numpy batches from a tf.data dataset, with a position that checkpoints save and restore.

    The dataset must be deterministic (as `seqio_dataset`'s is for a given seed): restoring
    position n re-reads the dataset from its start and skips n batches, so the run continues with
    exactly the batch it would have seen.
    """

    def __init__(self, dataset, position: int = 0):
        self._dataset = dataset
        self.set_state({"position": position})

    def get_state(self) -> dict[str, int]:
        return {"position": self._position}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._position = int(state["position"])
        self._iterator = None  # opened lazily, at the right place

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = iter(self._dataset.skip(self._position).as_numpy_iterator())
        batch = next(self._iterator)
        self._position += 1
        return batch


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------
def token_losses(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token cross-entropy, log-partition and correctness [batch, length], all in fp32."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = jnp.argmax(logits, axis=-1) == targets
    return log_z - target_logit, log_z, correct


def model_inputs(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array | None]:
    """The model's arguments for a batch: packed batches pass their segment ids."""
    return {"input_ids": batch["decoder_input_tokens"], "segment_ids": batch.get("decoder_segment_ids")}


@functools.lru_cache(maxsize=8)
def _token_losses_fn(config: BloomConfig) -> Callable:
    model = BloomForCausalLM(config)
    return jax.jit(lambda params, ids, segments, targets: token_losses(
        model.apply({"params": params}, ids, segment_ids=segments), targets)[0])


def example_losses(config: BloomConfig, params, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean target-token loss of every example in a batch, in stream order (packed or not)."""
    ce = np.asarray(_token_losses_fn(config)(params, batch["decoder_input_tokens"],
                                             batch.get("decoder_segment_ids"), batch["decoder_target_tokens"]))
    weights = np.asarray(batch["decoder_loss_weights"], np.float64)
    segments = np.asarray(batch.get("decoder_segment_ids", (weights > 0) | (batch["decoder_target_tokens"] > 0)))
    out = []
    for row in range(ce.shape[0]):
        for segment in np.unique(segments[row][segments[row] > 0]):
            w = weights[row] * (segments[row] == segment)
            if w.sum() > 0:
                out.append(float((ce[row] * w).sum() / w.sum()))
    return np.asarray(out)


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------
def learning_rate_schedule(tc: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then cosine or linear decay (or none) to the end value."""
    decay_steps = max(tc.num_steps - tc.warmup_steps, 1)
    if tc.decay == "cosine":
        decay = optax.cosine_decay_schedule(tc.learning_rate, decay_steps, tc.end_learning_rate / tc.learning_rate)
    elif tc.decay == "linear":
        decay = optax.linear_schedule(tc.learning_rate, tc.end_learning_rate, decay_steps)
    else:
        decay = optax.constant_schedule(tc.learning_rate)
    if tc.warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, tc.learning_rate, tc.warmup_steps)
    return optax.join_schedules([warmup, decay], [tc.warmup_steps])


def weight_decay_mask(params) -> Any:
    """True for the weights that decay: matrices and embeddings, not LayerNorm scales or biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in ("bias", "scale"), params)


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(learning_rate_schedule(tc), b1=tc.adam_b1, b2=tc.adam_b2, eps=tc.adam_eps,
                        weight_decay=tc.weight_decay, mask=weight_decay_mask)
    if tc.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(tc.max_grad_norm), adamw)
    return adamw


# --------------------------------------------------------------------------------------------
# State and shardings
# --------------------------------------------------------------------------------------------
class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32[2]: split once per step (for stochastic layers; BLOOM here has none)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainState":
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"], rng=d["rng"])


def state_shardings(config: BloomConfig, optimizer, mesh: Mesh, rules=DEFAULT_RULES) -> TrainState:
    """Shardings of the whole train state: parameters by the logical axis rules, each optimizer
    moment like its parameter, scalars (step, counts, RNG) replicated."""
    specs = param_logical_specs(BloomForCausalLM(config), jnp.ones((1, 1), jnp.int32))
    params = logical_to_sharding(specs, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_params = jax.eval_shape(lambda: init_params(config, jax.random.key(0), 1, 1))
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, params,
                                transform_non_params=lambda _: replicated)
    return TrainState(step=replicated, params=params, opt_state=opt, rng=replicated)


def abstract_state(config: BloomConfig, optimizer, shardings: TrainState) -> TrainState:
    """Shapes, dtypes and shardings of the train state, with nothing allocated (restore target)."""
    def make():
        params = init_params(config, jax.random.key(0), 1, 1)
        return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(0))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        jax.eval_shape(make), shardings)


def init_state(config: BloomConfig, params, optimizer, shardings: TrainState, seed: int) -> TrainState:
    """A fresh state from `params` (a host tree, the same on every host, or a device tree), placed
    by `shardings`."""
    dtype = config.params_dtype
    params = place(jax.tree.map(lambda x: x if x.dtype == dtype else x.astype(dtype), params), shardings.params)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    put = lambda x: jax.device_put(x, shardings.step)  # noqa: E731
    return TrainState(put(jnp.zeros((), jnp.int32)), params, opt_state, put(jax.random.PRNGKey(seed)))


# --------------------------------------------------------------------------------------------
# The train step
# --------------------------------------------------------------------------------------------
def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, config: BloomConfig, optimizer,
               tc: TrainConfig, batch_sharding: NamedSharding | None = None) -> tuple[TrainState, dict]:
    """One optimizer step on a global batch, accumulating gradients over `tc.micro_batches`."""
    model = BloomForCausalLM(config)
    total_weight = jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)

    def loss_fn(params, micro):
        logits = model.apply({"params": params}, **model_inputs(micro))
        ce, log_z, correct = token_losses(logits, micro["decoder_target_tokens"])
        w = micro["decoder_loss_weights"].astype(jnp.float32)
        sums = {"loss": jnp.sum(ce * w), "z_loss": tc.z_loss * jnp.sum(jnp.square(log_z) * w),
                "correct": jnp.sum(correct * w)}
        return (sums["loss"] + sums["z_loss"]) / total_weight, sums

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if tc.micro_batches == 1:
        grads, sums = grad_fn(state.params, batch)
    else:
        # Row i*k + j goes to micro-batch j: each device keeps its own rows in every micro-batch.
        k = tc.micro_batches
        split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)  # noqa: E731
        micro = jax.tree.map(split, dict(batch))

        def body(carry, mb):
            if batch_sharding is not None:
                mb = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), mb)
            g, s = grad_fn(state.params, mb)
            return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), carry, (g, s)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
        zero_sums = {name: jnp.zeros((), jnp.float32) for name in ("loss", "z_loss", "correct")}
        (grads, sums), _ = jax.lax.scan(body, (zeros, zero_sums), micro)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)

    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rng, _ = jax.random.split(state.rng)
    metrics = {"loss": sums["loss"] / total_weight, "z_loss": sums["z_loss"] / total_weight,
               "accuracy": sums["correct"] / total_weight, "grad_norm": optax.global_norm(grads),
               "target_tokens": total_weight}
    return TrainState(state.step + 1, params, opt_state, rng), metrics


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    return logical_to_sharding(PartitionSpec("batch", "length"), mesh, rules)


class Program(NamedTuple):
    """What a training run compiles once: the optimizer, state shardings, and jitted functions."""

    optimizer: optax.GradientTransformation
    shardings: TrainState
    init_params: Callable  # rng -> params, created in place with their shardings
    step: Callable  # (state, batch) -> (state, metrics); the state is donated


@functools.lru_cache(maxsize=8)
def training_program(config: BloomConfig, tc: TrainConfig, mesh: Mesh, rules=DEFAULT_RULES) -> Program:
    """The compiled pieces of a run, cached: another run of the same config in this process (a
    resume, the next MMST round) compiles nothing. `rules` must be a tuple of pairs."""
    optimizer = make_optimizer(tc)
    shardings = state_shardings(config, optimizer, mesh, rules)
    data = batch_sharding(mesh, rules)
    step = jax.jit(functools.partial(train_step, config=config, optimizer=optimizer, tc=tc, batch_sharding=data),
                   in_shardings=(shardings, data), out_shardings=(shardings, None), donate_argnums=0)

    def run(state, batch):
        # Traced under the mesh and rules: the model's activation constraints become shardings.
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return step(state, batch)

    init = jax.jit(lambda rng: init_params(config, rng, 1, 1), out_shardings=shardings.params)
    return Program(optimizer, shardings, init, run)


# --------------------------------------------------------------------------------------------
# Throughput accounting
# --------------------------------------------------------------------------------------------
def model_flops_per_token(config: BloomConfig, length: int) -> float:
    """Training FLOPs per token, 6N + 12 L H T (PaLM, appendix B): forward and backward of every
    matmul including the tied LM head, plus attention scores and mixing over `length` tokens."""
    return 6.0 * config.num_params() + 12.0 * config.n_layer * config.hidden_size * length


def device_peak_flops(tc: TrainConfig) -> float | None:
    if tc.peak_flops:
        return tc.peak_flops
    kind = jax.devices()[0].device_kind
    return next((v for k, v in sorted(KNOWN_PEAK_FLOPS.items(), key=lambda kv: -len(kv[0]))
                 if kind.startswith(k)), None)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _initial_params(config: BloomConfig, init, seed: int, program: Program, mesh: Mesh, rules):
    """`init` is a params tree, None (random), or a model directory (orbax or HF safetensors), read
    straight onto the mesh (each host only its devices' slices)."""
    if init is None:
        return program.init_params(jax.random.key(seed))
    if not isinstance(init, (str, os.PathLike)):
        return init
    from mmst_jax.models.orbax import load_model_dir, read_config

    path = os.fspath(init)
    theirs = read_config(path)
    if ckpt_lib.architecture(theirs) != ckpt_lib.architecture(config):
        raise ckpt_lib.CheckpointError(
            f"{path} holds a model of another architecture ({ckpt_lib.architecture(theirs)}) than the one "
            f"configured ({ckpt_lib.architecture(config)}): configure the model it holds")
    return load_model_dir(path, mesh=mesh, rules=rules)[1]


def _next_batch(data: BatchIterator, step: int, tc: TrainConfig) -> dict[str, np.ndarray]:
    try:
        batch = next(data)
    except StopIteration:
        raise DataError(f"the training data ran out after {data.get_state()['position']} batches "
                        f"(step {step} of {tc.num_steps}): it is empty or too short; "
                        "repeat it, add examples, or lower num_steps/batch_size") from None
    rows = batch["decoder_input_tokens"].shape[0]
    if rows * jax.process_count() != tc.batch_size:
        raise DataError(f"the data gives batches of {rows} rows per host; TrainConfig.batch_size "
                        f"is {tc.batch_size} over {jax.process_count()} host(s)")
    return {k: v for k, v in batch.items() if k in FEATURES or k == "decoder_segment_ids"}


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
    rules = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in rules)
    dp = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    if (tc.batch_size // tc.micro_batches) % dp:
        raise ValueError(f"micro-batch size {tc.batch_size // tc.micro_batches} is not divisible by the "
                         f"{dp} data-parallel devices of mesh {dict(mesh.shape)}")
    program = training_program(config, tc, mesh, rules)
    checkpoints = None
    if workdir is not None:
        checkpoints = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"), save_every=tc.checkpoint_every,
                                           keep=tc.keep_checkpoints, async_save=tc.async_checkpoints)
    try:
        abstract = abstract_state(config, program.optimizer, program.shardings).to_dict()
        restored = checkpoints.restore(abstract, config) if checkpoints else None
        if restored:
            step0, state_dict, meta = restored
            state = TrainState.from_dict(state_dict)
            data.set_state(meta["data"])
            log.info("resuming from %s at step %d", checkpoints.directory / str(step0), step0)
        start, end = int(restored[0]) if restored else 0, min(tc.num_steps, stop_at_step or tc.num_steps)
        if start >= end:
            return state
        first = _next_batch(data, start, tc)  # an empty dataset fails here, before any model is built
        if not restored:
            params = _initial_params(config, init, tc.seed, program, mesh, rules)
            state = init_state(config, params, program.optimizer, program.shardings, tc.seed)
        batches = itertools.chain([first], (_next_batch(data, step, tc) for step in itertools.count(start + 1)))
        state = _loop(config, state, program.step, batches, data, tc, mesh, rules, workdir, checkpoints,
                      start, end, on_step)
        if checkpoints is not None and checkpoints.last_saved_step != end:
            checkpoints.save(end, state.to_dict(), _meta(config, data))
    finally:
        if checkpoints is not None:
            checkpoints.close()
    return state


def _meta(config: BloomConfig, data: BatchIterator) -> dict:
    return {"model": ckpt_lib.model_meta(config), "data": data.get_state()}


def _loop(config, state, step_fn, batches, data, tc, mesh, rules, workdir, checkpoints, start, end, on_step):
    from tqdm import tqdm

    schedule = learning_rate_schedule(tc)
    place = batch_sharding(mesh, rules)
    is_main = jax.process_index() == 0
    writer = None
    if workdir is not None and is_main:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    peak = device_peak_flops(tc)
    bar = tqdm(total=end, initial=start, desc="training", unit="step", disable=not (tc.progress_bar and is_main))
    timer, timed_steps = None, 0  # throughput is timed from the first log on (past compilation)
    try:
        for step, batch in zip(range(start, end), batches):
            length = batch["decoder_input_tokens"].shape[1]
            batch = {k: jax.make_array_from_process_local_data(place, v) for k, v in batch.items()}
            state, metrics = step_fn(state, batch)
            done, timed_steps = step + 1, timed_steps + 1
            if checkpoints is not None and done < end and checkpoints.should_save(done):
                checkpoints.save(done, state.to_dict(), _meta(config, data))
            if on_step is not None:
                on_step(done, metrics)
            bar.update(1)
            if done % tc.log_every and done != end:
                continue
            host = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            if timer is not None:
                seconds = (now - timer) / timed_steps
                host["tokens_per_s"] = tc.batch_size * length / seconds
                if peak:
                    flops = model_flops_per_token(config, length) * tc.batch_size * length
                    host["mfu"] = flops / seconds / (peak * jax.device_count())
            timer, timed_steps = now, 0
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
