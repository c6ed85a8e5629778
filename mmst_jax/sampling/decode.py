"""The compiled programs of continuous batching: prefill, insert, generate (JetStream's split).

A fixed number of slots decode together in one compiled loop, each holding one row (a prompt and
a sample index) or nothing:

    prefill   problems' prompts [B, L] (right-padded) after the shared prefix -> their keys/values
              and each one's next-token logits; a problem is prefilled once for all its samples
    insert    rows into free slots: a problem's keys/values copied into the slot's cache, the
              row's first token drawn from the problem's logits with the row's own key
    generate  decode steps, every slot at its own length, until enough slots are free to refill
              (or every row has stopped): a row stops at EOS, a stop string or its token limit

    logits_t = model(token_{t-1} | cache)          # [slots, vocab]
    token_t  ~ softmax(filter(logits_t / T))       # greedy when T == 0; top-k, then top-p

Randomness is per row: a row draws its token t from fold_in(row_key, t), so its tokens depend on
its key alone — not on its slot, its neighbours, the number of slots or the mesh. `row_keys(seed,
prompt, sample)` gives every (prompt, sample index) its own key. `mmst_jax.sampling.sampler.Sampler`
drives these programs from the host.

Top-k and top-p thresholds are found exactly by bisection over fp32 bit patterns and a token is
drawn by inverse CDF over blocks of the vocabulary (one uniform per row): no sort and no random
number per vocabulary entry, both of which are slow on CPU.

Stop strings are matched on bytes inside the loop by an automaton over tokens
(`mmst_jax.sampling.stop_strings.StopStrings`), found even when they start or end inside a token.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.bloom_cache import (cache_logical_axes, cached_forward, decoding_params, init_cache,
                                         prefix_entries)
from mmst_jax.sampling.stop_strings import StopStrings, token_bytes  # noqa: F401 (part of the sampler's API)


class SamplingError(ValueError):
    """Sampling asked for something impossible; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How each next token is chosen. temperature 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.temperature < 0:
            raise SamplingError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k < 0:
            raise SamplingError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


# --------------------------------------------------------------------------------------------
# Choosing tokens
# --------------------------------------------------------------------------------------------
def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Sets to -inf every logit outside the top-k (ties with the k-th kept) and outside the
    nucleus: the tokens whose more likely tokens (strictly) hold less than top_p of the mass (so
    the most likely token is always kept, and the kept mass just reaches top_p).
    logits: fp32 [batch, vocab]."""
    neg = jnp.finfo(logits.dtype).min
    if top_k and top_k < logits.shape[-1]:
        logits = jnp.where(logits < _threshold(logits, jnp.ones_like(logits), top_k), neg, logits)
    if top_p < 1.0:
        probs = jax.nn.softmax(logits, axis=-1)
        logits = jnp.where(logits < _threshold(logits, probs, top_p), neg, logits)
    return logits


def _sortable(x: jax.Array) -> jax.Array:
    """fp32 -> uint32 with the same order (negative floats have their bits flipped)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _threshold(logits: jax.Array, weight: jax.Array, limit: float) -> jax.Array:
    """The smallest kept logit per row [batch, 1], found exactly without sorting the vocabulary.

    A token with logit l is kept iff weight(logits > l) < limit (weight 1: top-k with limit k;
    weight = probability: top-p). That predicate is monotone in l, so a bisection over the
    ordered fp32 bit patterns between the row's least and greatest logit (a masked sum over the
    vocabulary per halving, far cheaper than a sort on CPU) finds the least pattern T for which it
    holds: keep l >= T. The loop ends as soon as every row's interval is one pattern.
    """
    keys = _sortable(logits)  # [batch, vocab]

    def body(bounds):  # invariant: the predicate fails below lo and holds at hi
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        holds = jnp.sum(jnp.where(keys > mid[:, None], weight, 0.0), axis=-1) < limit
        return jnp.where(holds, lo, mid + 1), jnp.where(holds, mid, hi)

    bounds = (jnp.min(keys, axis=-1), jnp.max(keys, axis=-1))  # the largest logit is always kept
    lo, _ = jax.lax.while_loop(lambda b: jnp.any(b[0] < b[1]), body, bounds)
    bits = jnp.where(lo >> 31 == 1, lo & jnp.uint32(0x7FFFFFFF), ~lo)  # back to fp32 bits
    return jax.lax.bitcast_convert_type(bits, jnp.float32)[:, None]


def next_token(logits: jax.Array, keys: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """One token per row from fp32 logits [batch, vocab]; keys [batch]: one key per row."""
    if sampling.temperature == 0.0:  # argmax (its first index), as two plain reductions: on CPU
        # several times faster than XLA's (value, index) reduction
        top = jnp.max(logits, axis=-1, keepdims=True)
        index = jnp.arange(logits.shape[-1], dtype=jnp.int32)
        return jnp.min(jnp.where(logits == top, index, logits.shape[-1]), axis=-1)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))  # unnormalised, 0 if filtered
    u = jax.vmap(jax.random.uniform)(keys)  # [batch]: one uniform per row, not one per token
    return _inverse_cdf(probs, u * jnp.sum(probs, axis=-1))


def _inverse_cdf(weights: jax.Array, target: jax.Array, block: int = 128) -> jax.Array:
    """Per row the least index i with sum(weights[:i + 1]) > target: token i is drawn with
    probability weights[i] / sum(weights) when target is uniform in [0, sum). Two passes instead of
    a bisection's log2(vocab): the block holding the target (cumulative block sums), then the
    index inside it. A Gumbel-max draw would need a random number per token.
    weights [batch, vocab] >= 0, target [batch]."""
    batch, vocab = weights.shape
    width = -(-vocab // block) * block
    padded = jnp.pad(weights, ((0, 0), (0, width - vocab))).reshape(batch, width // block, block)
    sums = jnp.sum(padded, axis=-1)  # [batch, blocks]
    ends = jnp.cumsum(sums, axis=-1)
    last_block = jnp.max(jnp.where(sums > 0, jnp.arange(sums.shape[1]), 0), axis=-1)
    chosen = jnp.minimum(jnp.sum(ends <= target[:, None], axis=-1), last_block)
    before = jnp.where(chosen > 0, jnp.take_along_axis(ends, jnp.maximum(chosen - 1, 0)[:, None], 1)[:, 0], 0.0)
    inside = jnp.take_along_axis(padded, chosen[:, None, None], axis=1)[:, 0]  # [batch, block]
    cdf = before[:, None] + jnp.cumsum(inside, axis=-1)
    positive = inside > 0  # rounding never picks a filtered token: at most the block's last kept one
    last = jnp.max(jnp.where(positive, jnp.arange(block), 0), axis=-1)
    offset = jnp.minimum(jnp.sum(cdf <= target[:, None], axis=-1), last)
    return (chosen * block + offset).astype(jnp.int32)


def row_keys(seed: int, prompt_index: Sequence[int], sample_index: Sequence[int]) -> jax.Array:
    """Keys [rows]: fold_in(fold_in(key(seed), prompt_index), sample_index) per row."""
    base = jax.random.key(seed)
    fold = jax.vmap(lambda p, s: jax.random.fold_in(jax.random.fold_in(base, p), s))
    return fold(jnp.asarray(prompt_index, jnp.uint32), jnp.asarray(sample_index, jnp.uint32))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, length: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (ids [batch, length], mask [batch, length]) padded on the left."""
    if not len(prompts):
        raise SamplingError("no prompts to sample from")
    if any(len(p) == 0 for p in prompts):
        raise SamplingError("a prompt is empty: every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    length = longest if length is None else length
    if length < longest:
        raise SamplingError(f"a prompt of {longest} tokens does not fit in {length}")
    ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for row, p in enumerate(prompts):
        ids[row, length - len(p):] = p
        mask[row, length - len(p):] = 1
    return ids, mask


# --------------------------------------------------------------------------------------------
# The slots and the three programs
# --------------------------------------------------------------------------------------------
# A key's data (uint32), from shapes alone: importing this module must not start a JAX backend
# (jax.distributed.initialize comes first on several hosts).
KEY_SHAPE = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape


@dataclasses.dataclass(frozen=True)
class TokenRules:
    """What a row's tokens obey besides the model: the token choice, EOS, the stop automaton
    (table [states, vocab]; its last state means matched), the padding token."""

    sampling: SamplingConfig
    eos_id: int | None
    pad_id: int


class Slots(struct.PyTreeNode):
    """The decode loop's state: `slots` rows decoding at once, each slot one row or free."""

    cache: dict  # per layer [slots, heads, C, head_dim] (+ the shared prefix, held once)
    lengths: jax.Array  # [slots] int32: tokens in the slot's cache (its prompt, then its new tokens)
    last: jax.Array  # [slots] int32: the last chosen token, cached at the next step
    tokens: jax.Array  # [slots, max_new_tokens] int32: the row's new tokens, pad_id after them
    count: jax.Array  # [slots] int32: new tokens chosen so far
    limit: jax.Array  # [slots] int32: the row's token limit
    keys: jax.Array  # [slots, ...] uint32: the row's key (its data)
    stop_state: jax.Array  # [slots] int32: the row's state in the stop automaton
    done: jax.Array  # [slots] bool: the row has stopped, or the slot is free
    steps: jax.Array  # []: decode steps run so far


def _placed(state: Slots) -> Slots:
    """The state in its one layout: every per-row field split like the batch, the cache by its
    logical axes, the step count replicated. Every program returns the state so, so the next call
    gets inputs laid out as the program was compiled for (left to XLA, an output's layout can
    differ from its input's, and each program would be compiled again for it)."""
    def rows(x):
        return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))

    return state.replace(cache=nn.with_logical_constraint(state.cache, cache_logical_axes(state.cache)),
                         lengths=rows(state.lengths), last=rows(state.last), tokens=rows(state.tokens),
                         count=rows(state.count), limit=rows(state.limit), keys=rows(state.keys),
                         stop_state=rows(state.stop_state), done=rows(state.done),
                         steps=nn.with_logical_constraint(state.steps, ()))


def _choose(logits, keys, count, stop_state, done, rules: TokenRules, stop_table):
    """(token, stop_state, stopped) of every row after its logits [rows, vocab]; done rows keep
    their state and get pad_id."""
    step_keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(keys), count)
    token = jnp.where(done, rules.pad_id, next_token(logits, step_keys, rules.sampling))
    stopped = done
    if rules.eos_id is not None:
        stopped = stopped | (token == rules.eos_id)
    if stop_table is not None:
        stop_state = jnp.where(done, stop_state, stop_table[stop_state, token])
        stopped = stopped | (stop_state == stop_table.shape[0] - 1)
    return token, stop_state, stopped


@functools.partial(jax.jit, static_argnames=("config", "slots", "cache_length", "max_new_tokens"))
def empty_slots(prefix: dict | None, *, config: BloomConfig, slots: int, cache_length: int,
                max_new_tokens: int) -> Slots:
    """Every slot free: a zero cache of `cache_length` columns behind the shared prefix."""
    cache = init_cache(config, slots, cache_length, prefix=prefix)
    zeros = jnp.zeros((slots,), jnp.int32)
    return _placed(Slots(cache=cache, lengths=zeros, last=zeros, tokens=jnp.zeros((slots, max_new_tokens), jnp.int32),
                         count=zeros, limit=zeros, keys=jnp.zeros((slots, *KEY_SHAPE), jnp.uint32),
                         stop_state=zeros, done=jnp.ones((slots,), bool), steps=jnp.zeros((), jnp.int32)))


@functools.partial(jax.jit, static_argnames=("config",))
def prefill_prefix(params, prefix_ids: jax.Array, *, config: BloomConfig) -> dict:
    """prefix_key/value of a shared prefix prefix_ids [1, P] (params: `decoding_params`)."""
    _, cache = cached_forward(config, params, {}, prefix_ids, jnp.zeros((1,), jnp.int32), empty=True)
    return prefix_entries(cache)


@functools.partial(jax.jit, static_argnames=("config",))
def prefill(params, prefix: dict | None, ids: jax.Array, lengths: jax.Array, *, config: BloomConfig
            ) -> tuple[dict, jax.Array]:
    """Problems' prompts after the shared prefix: ids [B, L] right-padded, lengths [B] real tokens.
    Returns (their keys/values, per layer [B, heads, L, head_dim]; logits [B, vocab] after each
    one's last real token)."""
    logits, cache = cached_forward(config, params, prefix or {}, ids, jnp.zeros_like(lengths), empty=True,
                                   logits_at=lengths - 1)
    return {name: cache[name] for name in ("key", "value")}, logits


@functools.partial(jax.jit, static_argnames=("rules",), donate_argnums=(0,))
def insert(state: Slots, kv: dict, logits: jax.Array, lengths: jax.Array, slots: jax.Array,
           sources: jax.Array, keys: jax.Array, limits: jax.Array, *, rules: TokenRules,
           stop_table: jax.Array | None = None) -> Slots:
    """Starts rows in slots: row f goes to slot slots[f] (>= the number of slots: no row), from
    prefilled problem sources[f] of `prefill`'s (kv, logits, lengths), with key data keys[f] and
    token limit limits[f]; its first token is drawn here (its token 0)."""
    zero = jnp.zeros_like(slots)
    first, stop_state, stopped = _choose(logits[sources], keys, zero, zero, jnp.zeros(slots.shape, bool),
                                         rules, stop_table)
    stopped = stopped | (limits <= 1)
    width = kv["key"][0].shape[2]
    cache = dict(state.cache)
    for name in ("key", "value"):
        cache[name] = tuple(c.at[slots, :, :width].set(x[sources].astype(c.dtype), mode="drop")
                            for c, x in zip(state.cache[name], kv[name]))
    tokens = jnp.full((slots.shape[0], state.tokens.shape[1]), rules.pad_id, jnp.int32).at[:, 0].set(first)

    def put(x, value):
        return x.at[slots].set(value, mode="drop")

    return _placed(Slots(cache=cache, lengths=put(state.lengths, lengths[sources]), last=put(state.last, first),
                         tokens=put(state.tokens, tokens), count=put(state.count, zero + 1),
                         limit=put(state.limit, limits), keys=put(state.keys, keys),
                         stop_state=put(state.stop_state, stop_state), done=put(state.done, stopped),
                         steps=state.steps))


@functools.partial(jax.jit, static_argnames=("config", "rules"), donate_argnums=(1,))
def generate(params, state: Slots, want_free: jax.Array, *, config: BloomConfig, rules: TokenRules,
             stop_table: jax.Array | None = None) -> Slots:
    """Decode steps until at least `want_free` slots are free (or every row has stopped). Each
    step caches every slot's last token at its own column and chooses the row's next one."""
    rows = jnp.arange(state.done.shape[0])

    def cond(s: Slots):
        return (jnp.sum(s.done) < want_free) & ~jnp.all(s.done)

    def body(s: Slots) -> Slots:
        logits, cache = cached_forward(config, params, s.cache, s.last[:, None], s.lengths)
        token, stop_state, stopped = _choose(logits, s.keys, s.count, s.stop_state, s.done, rules, stop_table)
        live = ~s.done
        at = jnp.where(live, s.count, s.tokens.shape[1])  # a stopped row writes nowhere
        count = s.count + live
        return s.replace(cache=cache, lengths=s.lengths + live, last=jnp.where(live, token, s.last),
                         tokens=s.tokens.at[rows, at].set(token, mode="drop"), count=count,
                         stop_state=stop_state, done=stopped | (count >= s.limit), steps=s.steps + 1)

    return _placed(jax.lax.while_loop(cond, body, state))


def lower_generate(config: BloomConfig, mesh, rules, *, slots: int, cache_length: int, rules_: TokenRules,
                   stop_states: int | None = 3):
    """`generate` as the sampler runs it — `slots` rows against caches of `cache_length` columns,
    under the token rules and a stop automaton of `stop_states` states (None: no stop strings) —
    lowered against abstract inputs placed by their logical axes: nothing is allocated (for
    `mmst plan`; `.compile()` it to read its memory)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from mmst_jax import sharding
    from mmst_jax.models import shardings

    params = jax.eval_shape(decoding_params, nn.unbox(shardings.abstract_params(config)))
    param_shardings = shardings.decoding_param_shardings(config, mesh, rules)
    cache = jax.eval_shape(lambda: init_cache(config, slots, cache_length))
    cache_shardings = shardings.cache_shardings(cache, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())

    def rows(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, rules, ndim=len(shape)))

    n = rules_.sampling.max_new_tokens
    state = Slots(cache=sharding.abstract_with_shardings(cache, cache_shardings),
                  lengths=rows((slots,), jnp.int32), last=rows((slots,), jnp.int32),
                  tokens=rows((slots, n), jnp.int32), count=rows((slots,), jnp.int32),
                  limit=rows((slots,), jnp.int32), keys=rows((slots, *KEY_SHAPE), jnp.uint32),
                  stop_state=rows((slots,), jnp.int32), done=rows((slots,), jnp.bool_),
                  steps=jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated))
    want = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    table = None if stop_states is None else jax.ShapeDtypeStruct((stop_states, config.vocab_size), jnp.int32,
                                                                  sharding=replicated)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return generate.lower(sharding.abstract_with_shardings(params, param_shardings), state, want,
                              config=config, rules=rules_, stop_table=table)
