"""KV-cached sampling: one prefill pass, then a compiled decode loop (no Python per token).

    logits_t = model(token_{t-1} | cache)          # [batch, vocab]
    token_t  ~ softmax(filter(logits_t / T))       # greedy when T == 0; top-k, then top-p
    stop a row at EOS or after max_new_tokens; stop the loop when every row has stopped

Prompts are left-padded to one length P, so every row writes its new tokens at the same cache slot;
the cache-length attention mask tells the model which slots hold real tokens, and ALiBi positions
follow from it exactly as in `transformers`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, init_cache


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


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Sets to -inf every logit outside the top-k and outside the smallest set of tokens whose
    probability mass reaches top_p (the most likely token is always kept). logits: [batch, vocab]."""
    neg = jnp.finfo(logits.dtype).min
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        keep = mass_before < top_p
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return logits


def next_token(logits: jax.Array, rng: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Chooses one token per row from fp32 logits [batch, vocab]."""
    if sampling.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (ids [batch, P], mask [batch, P]) padded on the left."""
    if not prompts:
        raise SamplingError("no prompts to sample from")
    if any(len(p) == 0 for p in prompts):
        raise SamplingError("a prompt is empty: every prompt needs at least one token")
    length = max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for row, p in enumerate(prompts):
        ids[row, length - len(p):] = p
        mask[row, length - len(p):] = 1
    return ids, mask


@functools.partial(jax.jit, static_argnames=("config", "sampling", "eos_id", "pad_id"))
def generate(params, prompt_ids: jax.Array, prompt_mask: jax.Array, rng: jax.Array, *,
             config: BloomConfig, sampling: SamplingConfig, eos_id: int | None, pad_id: int) -> jax.Array:
    """Samples continuations of left-padded prompts.

    Returns tokens [batch, max_new_tokens]: each row's new tokens, ending with EOS (kept) and
    filled with pad_id after it.
    """
    model = BloomForCausalLM(config)
    batch, prompt_length = prompt_ids.shape
    steps = sampling.max_new_tokens
    cache_length = prompt_length + steps
    mask = jnp.zeros((batch, cache_length), jnp.int32).at[:, :prompt_length].set(prompt_mask)
    cache = init_cache(config, batch, cache_length)

    logits, variables = model.apply({"params": params, "cache": cache}, prompt_ids, mask,
                                    decode=True, mutable=["cache"])
    rng, key = jax.random.split(rng)
    token = next_token(logits[:, -1].astype(jnp.float32), key, sampling)
    out = jnp.full((batch, steps), pad_id, jnp.int32).at[:, 0].set(token)
    done = (token == eos_id) if eos_id is not None else jnp.zeros((batch,), bool)

    def cond(state):
        step, _, _, _, done, _ = state
        return (step < steps) & ~jnp.all(done)

    def body(state):
        step, cache, mask, out, done, rng = state
        slot = prompt_length + step - 1  # where the last chosen token goes
        mask = jax.lax.dynamic_update_slice_in_dim(mask, jnp.ones((batch, 1), jnp.int32), slot, axis=1)
        last = jax.lax.dynamic_slice_in_dim(out, step - 1, 1, axis=1)
        logits, variables = model.apply({"params": params, "cache": cache}, last, mask,
                                        decode=True, mutable=["cache"])
        rng, key = jax.random.split(rng)
        token = next_token(logits[:, -1].astype(jnp.float32), key, sampling)
        token = jnp.where(done, pad_id, token)
        out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], step, axis=1)
        if eos_id is not None:
            done = done | (token == eos_id)
        return step + 1, variables["cache"], mask, out, done, rng

    state = (jnp.asarray(1), variables["cache"], mask, out, done, rng)
    _, _, _, out, _, _ = jax.lax.while_loop(cond, body, state)
    return out


def trim(tokens: np.ndarray, eos_id: int | None) -> list[list[int]]:
    """Rows of generated tokens cut before EOS (and the padding after it)."""
    rows = []
    for row in np.asarray(tokens).tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        rows.append(row)
    return rows
