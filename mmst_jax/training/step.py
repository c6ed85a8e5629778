"""The sharded train step: loss, optimizer, train state and its shardings, and the one jitted step.

The loss is the mean cross-entropy over all target tokens of the global batch (plus an optional
z-loss), so gradient accumulation over micro-batches computes the same gradient as one big batch.
Compute dtype and parameter dtype come from the BloomConfig (`dtype`, `param_dtype`); the optimizer
state takes the parameters' dtype, and the loss, softmax and gradient accumulation are fp32.

Packed batches carry `decoder_segment_ids`, which the model turns into attention that never crosses
examples and ALiBi positions that restart per example, so packing does not change any example's
loss. Attention is causal everywhere (BLOOM is a causal LM); `decoder_causal_attention` is unused.

`training_program` compiles what a run needs once; `lower_train_step` lowers that same step against
abstract inputs (nothing allocated), which is what `mmst plan` compiles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, init_params
from mmst_jax.models.shardings import param_shardings
from mmst_jax.sharding import DEFAULT_RULES, logical_to_sharding, place, validate_rules
from mmst_jax.training.config import TrainConfig
from mmst_jax.training.data import FEATURES


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
    """AdamW on the schedule, with the decay mask, after global-norm clipping (unless turned off)."""
    adamw = optax.adamw(learning_rate_schedule(tc), b1=tc.adam_b1, b2=tc.adam_b2, eps=tc.adam_eps,
                        weight_decay=tc.weight_decay, mask=weight_decay_mask)
    if tc.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(tc.max_grad_norm), adamw)
    return adamw


# --------------------------------------------------------------------------------------------
# State and shardings
# --------------------------------------------------------------------------------------------
class TrainState(flax.struct.PyTreeNode):
    """Everything a step reads and writes, and what a checkpoint holds."""

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
    params = param_shardings(config, mesh, rules)
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


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding of a [batch, length] input feature: rows by the `batch` rule."""
    return logical_to_sharding(PartitionSpec("batch", "length"), mesh, rules)


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


@dataclasses.dataclass(frozen=True)
class Program:
    """What a training run compiles once: the optimizer, the state and batch shardings, the jitted
    parameter init and the jitted step."""

    optimizer: optax.GradientTransformation
    shardings: TrainState
    batch_sharding: NamedSharding
    init_params: Callable  # rng -> params, created in place with their shardings
    jitted_step: Any  # jax.jit of train_step: (state, batch) -> (state, metrics); the state is donated
    mesh: Mesh
    rules: tuple

    def step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
        """One optimizer step; the state passed in is donated."""
        with self._traced():
            return self.jitted_step(state, batch)

    def lower(self, state: TrainState, batch: Mapping[str, jax.Array]) -> jax.stages.Lowered:
        """The step lowered for these (abstract or concrete) arguments, ready to compile."""
        with self._traced():
            return self.jitted_step.lower(state, batch)

    @contextlib.contextmanager
    def _traced(self):
        """Traced under the mesh and rules: the model's activation constraints become shardings."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield


@functools.lru_cache(maxsize=8)
def training_program(config: BloomConfig, tc: TrainConfig, mesh: Mesh, rules=DEFAULT_RULES) -> Program:
    """The compiled pieces of a run, cached: another run of the same config in this process (a
    resume, the next MMST round) compiles nothing. `rules` must be a tuple of pairs."""
    optimizer = make_optimizer(tc)
    shardings = state_shardings(config, optimizer, mesh, rules)
    data = batch_sharding(mesh, rules)
    step = jax.jit(functools.partial(train_step, config=config, optimizer=optimizer, tc=tc, batch_sharding=data),
                   in_shardings=(shardings, data), out_shardings=(shardings, None), donate_argnums=0)
    init = jax.jit(lambda rng: init_params(config, rng, 1, 1), out_shardings=shardings.params)
    return Program(optimizer, shardings, data, init, step, mesh, rules)


def lower_train_step(config: BloomConfig, tc: TrainConfig, mesh: Mesh, rules=DEFAULT_RULES, *,
                     length: int) -> jax.stages.Lowered:
    """The step `training_program` runs, lowered against the abstract train state and an abstract
    batch of `tc.batch_size` rows of `length` tokens: nothing is allocated, so the mesh's devices
    may be simulated or ahead-of-time TPU devices. `.compile()` it to read its memory."""
    program = training_program(config, tc, mesh, validate_rules(rules))
    state = abstract_state(config, program.optimizer, program.shardings)
    batch = {name: jax.ShapeDtypeStruct((tc.batch_size, length), jnp.int32, sharding=program.batch_sharding)
             for name in FEATURES}
    return program.lower(state, batch)
