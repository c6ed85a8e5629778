"""KV-cached sampling: one prefill pass, then a compiled decode loop (no Python per token).

    logits_t = model(token_{t-1} | cache)          # [batch, vocab]
    token_t  ~ softmax(filter(logits_t / T))       # greedy when T == 0; top-k, then top-p
    stop a row at EOS, at a stop string or after max_new_tokens; the loop ends when every row has

Prompts are left-padded to one length, so every row writes its new tokens at the same cache slot;
the cache-length attention mask tells the model which slots hold real tokens, and ALiBi positions
follow from it exactly as in `transformers`.

Shared prefix: when every row starts with the same tokens (a few-shot block), `prefill_prefix` runs
them once (batch 1) and the rows attend to those keys/values, held once, before their own cache
(`bloom.init_cache(..., prefix=...)`); only the rows' own suffixes are prefilled per row.

Randomness is per row: row r draws step t from fold_in(row_key[r], t), so a row's sample depends on
its key alone — not on the batch it is in, the batch size or the mesh. `row_keys(seed, prompt,
sample)` gives every (prompt, sample index) its own key.

Stop strings are matched on bytes inside the loop by an automaton over tokens (`StopStrings`): a
table [states, vocab] of the matcher's state after each token, so a stop string is found even when
it starts or ends inside a token. The returned text is cut before the stop string.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, cache_logical_axes, init_cache


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


def next_token(logits: jax.Array, keys: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """One token per row from fp32 logits [batch, vocab]; keys [batch]: one key per row."""
    if sampling.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


def row_keys(seed: int, prompt_index: Sequence[int], sample_index: Sequence[int]) -> jax.Array:
    """Keys [rows]: fold_in(fold_in(key(seed), prompt_index), sample_index) per row."""
    base = jax.random.key(seed)
    fold = jax.vmap(lambda p, s: jax.random.fold_in(jax.random.fold_in(base, p), s))
    return fold(jnp.asarray(prompt_index, jnp.uint32), jnp.asarray(sample_index, jnp.uint32))


# --------------------------------------------------------------------------------------------
# Stop strings
# --------------------------------------------------------------------------------------------
def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id adds to the text (b"" for special tokens).

    `tokenizer`: a `tokenizers.Tokenizer` or anything with one as `.tokenizer` (our vocabulary).
    Exact for byte-level BPE (BLOOM's); otherwise each token decoded on its own.
    """
    import tokenizers

    tok = getattr(tokenizer, "tokenizer", tokenizer)
    size = tok.get_vocab_size(with_added_tokens=True)
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    if isinstance(tok.decoder, tokenizers.decoders.ByteLevel):
        # GPT-2's bytes <-> printable characters table, inverted.
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
        chars = printable + [256 + i for i in range(256 - len(printable))]
        byte_of = dict(zip(map(chr, chars), printable + sorted(set(range(256)) - set(printable))))
        out = []
        for i in range(size):
            piece = tok.id_to_token(i)
            ok = i not in special and piece is not None and all(c in byte_of for c in piece)
            out.append(bytes(byte_of[c] for c in piece) if ok else b"")
        return out
    return [b"" if i in special else tok.decode([i]).encode("utf-8") for i in range(size)]


class StopStrings:
    """Detects stop strings in generated tokens, on device, one table lookup per token.

    table [states, vocab] int32: the matcher's state after reading a token's bytes in a state;
    state 0 is "nothing matched yet", states >= `num_live` mean a stop string has been produced.
    """

    def __init__(self, strings: Sequence[str], token_bytes: Sequence[bytes]):
        if isinstance(strings, str):
            strings = [strings]
        strings = list(strings)
        for s in strings:
            if not isinstance(s, str) or not s:
                raise SamplingError(f"stop string {s!r} can never be detected: give non-empty strings")
        self.strings = tuple(strings)
        patterns = [s.encode("utf-8") for s in strings]
        # A pattern containing another one always stops at the other first: drop it.
        patterns = sorted({p for p in patterns if not any(q != p and q in p for q in patterns)})
        prefixes = sorted({p[:i] for p in patterns for i in range(len(p))}, key=lambda x: (len(x), x))
        state_of = {p: i for i, p in enumerate(prefixes)}
        live = len(prefixes)
        byte_table = np.zeros((live + len(patterns), 256), np.int32)
        for i, text in enumerate(prefixes):
            for b in range(256):
                t = text + bytes([b])
                hit = [j for j, p in enumerate(patterns) if t.endswith(p)]
                if hit:
                    byte_table[i, b] = live + hit[0]
                else:  # the longest suffix of t that starts some pattern
                    byte_table[i, b] = next(state_of[t[k:]] for k in range(len(t) + 1) if t[k:] in state_of)
        byte_table[live:] = np.arange(live, live + len(patterns))[:, None]  # a match is final

        # Run every token's bytes from every state at once (tokens sorted by length).
        lengths = np.array([len(b) for b in token_bytes])
        width = max(int(lengths.max()), 1)
        padded = np.zeros((len(token_bytes), width), np.int32)
        for i, b in enumerate(token_bytes):
            padded[i, :len(b)] = np.frombuffer(b, np.uint8)
        table = np.tile(np.arange(byte_table.shape[0], dtype=np.int32)[:, None], (1, len(token_bytes)))
        for j in range(width):
            active = np.nonzero(lengths > j)[0]
            table[:, active] = byte_table[table[:, active], padded[active, j][None, :]]
        self.table = table  # [live + len(patterns), vocab]
        self.num_live = live

        reachable, frontier = {0}, [0]
        while frontier:
            new = set(np.unique(table[frontier]).tolist()) - reachable
            reachable |= new
            frontier = sorted(new)
        for j, p in enumerate(patterns):
            if live + j not in reachable:
                raise SamplingError(f"stop string {p.decode('utf-8')!r} can never be detected: no sequence "
                                    "of this vocabulary's tokens produces it; use text the tokenizer can write")

    @property
    def device_table(self) -> np.ndarray:
        """[live + 1, vocab]: the table with every match state merged into the last one."""
        return np.minimum(self.table, self.num_live)

    def truncate(self, text: str) -> str:
        """`text` cut before the earliest occurrence of any stop string."""
        cut = min((i for i in (text.find(s) for s in self.strings) if i >= 0), default=len(text))
        return text[:cut]


# --------------------------------------------------------------------------------------------
# Compiled prefill and decode loop
# --------------------------------------------------------------------------------------------
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


@functools.partial(jax.jit, static_argnames=("config",))
def prefill_prefix(params, prefix_ids: jax.Array, *, config: BloomConfig) -> dict[str, jax.Array]:
    """The batch-1 cache of a shared prefix, prefix_ids [1, P], for `init_cache(prefix=...)`."""
    length = prefix_ids.shape[1]
    cache = init_cache(config, 1, length)
    _, variables = BloomForCausalLM(config).apply(
        {"params": params, "cache": cache}, prefix_ids, jnp.ones_like(prefix_ids), decode=True,
        prefill=True, last_logits_only=True, mutable=["cache"])
    return variables["cache"]


@functools.partial(jax.jit, static_argnames=("config", "sampling", "eos_id", "pad_id", "cache_length"))
def decode(params, prompt_ids: jax.Array, prompt_mask: jax.Array, keys: jax.Array, *,
           config: BloomConfig, sampling: SamplingConfig, eos_id: int | None, pad_id: int,
           prefix: dict | None = None, stop_table: jax.Array | None = None,
           cache_length: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Samples continuations of left-padded prompts (after a shared prefix if `prefix` is given).

    prompt_ids, prompt_mask [batch, T]; keys [batch] (one per row) or [] (split per row).
    Returns (tokens [batch, max_new_tokens], lengths [batch]): row r's new tokens are
    tokens[r, :lengths[r]], the last being EOS or the token that completed a stop string when the
    row stopped on one; pad_id after.
    """
    model = BloomForCausalLM(config)
    batch, prompt_length = prompt_ids.shape
    steps = sampling.max_new_tokens
    cache_length = cache_length or prompt_length + steps
    if prompt_length + steps > cache_length:
        raise SamplingError(f"prompts of {prompt_length} tokens plus {steps} new tokens need "
                            f"{prompt_length + steps} cache slots; the cache has {cache_length}")
    if keys.ndim == 0:
        keys = jax.vmap(lambda r: jax.random.fold_in(keys, r))(jnp.arange(batch))
    mask = jnp.zeros((batch, cache_length), jnp.int32).at[:, :prompt_length].set(prompt_mask)
    cache = init_cache(config, batch, cache_length, prefix=prefix)
    cache = nn.with_logical_constraint(cache, cache_logical_axes(cache))

    def choose(logits, step, state, done):
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
        token = next_token(logits[:, -1].astype(jnp.float32), step_keys, sampling)
        token = jnp.where(done, pad_id, token)
        stopped = done
        if eos_id is not None:
            stopped = stopped | (token == eos_id)
        if stop_table is not None:
            state = jnp.where(done, state, stop_table[state, token])
            stopped = stopped | (state == stop_table.shape[0] - 1)  # the last state: matched
        return token, state, stopped

    logits, variables = model.apply({"params": params, "cache": cache}, prompt_ids, mask, decode=True,
                                    prefill=True, last_logits_only=True, mutable=["cache"])
    no = jnp.zeros((batch,), bool)
    token, state, done = choose(logits, 0, jnp.zeros((batch,), jnp.int32), no)
    out = jnp.full((batch, steps), pad_id, jnp.int32).at[:, 0].set(token)
    lengths = jnp.ones((batch,), jnp.int32)

    def cond(carry):
        step, _, _, _, _, done, _ = carry
        return (step < steps) & ~jnp.all(done)

    def body(carry):
        step, cache, mask, out, state, done, lengths = carry
        slot = prompt_length + step - 1  # where the last chosen token goes
        mask = jax.lax.dynamic_update_slice_in_dim(mask, jnp.ones((batch, 1), jnp.int32), slot, axis=1)
        last = jax.lax.dynamic_slice_in_dim(out, step - 1, 1, axis=1)  # [batch, 1]
        logits, variables = model.apply({"params": params, "cache": cache}, last, mask,
                                        decode=True, mutable=["cache"])
        token, state, stopped = choose(logits, step, state, done)
        out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], step, axis=1)
        lengths = lengths + (~done).astype(jnp.int32)
        return step + 1, variables["cache"], mask, out, state, stopped, lengths

    carry = (jnp.asarray(1), variables["cache"], mask, out, state, done, lengths)
    *_, out, _, _, lengths = jax.lax.while_loop(cond, body, carry)
    return out, lengths


def generate(params, prompt_ids, prompt_mask, rng, *, config: BloomConfig, sampling: SamplingConfig,
             eos_id: int | None, pad_id: int, **options) -> jax.Array:
    """`decode`'s tokens [batch, max_new_tokens] alone (EOS kept, pad_id after it)."""
    return decode(params, prompt_ids, prompt_mask, rng, config=config, sampling=sampling,
                  eos_id=eos_id, pad_id=pad_id, **options)[0]
