"""Cached decoding of BLOOM: the blocks of `mmst_jax.models.bloom`, unrolled over per-layer weights
and a per-layer KV cache.

    decoding_params(params)          the layout a decode step reads: one weight tree per layer,
                                     the tied embedding transposed for the LM head
    init_cache(config, B, C)         key/value [B, heads, C, head_dim] per layer, zeros, optionally
                                     behind a shared prefix (keys/values [heads, P, head_dim], held
                                     once for the batch) every row attends to first
    cached_forward(config, params, cache, ids [B, T], lengths [B])
                                     row b's next T tokens after the lengths[b] it has cached ->
                                     (logits [B, vocab], the cache with their keys/values)

Positions, masks and ALiBi are those of the whole sequence in `BloomForCausalLM` (tested against
it and against `transformers`).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmst_jax.models.bloom import Array, BloomBlock, BloomConfig, alibi_slopes, layer_norm


def decoding_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The layout `cached_forward` reads: the scanned layer stack `h` split into one tree per
    layer (`layers`), and the tied embedding held transposed (`embedding_t` [embed, vocab]).
    Each layer's weights are then a buffer of their own, which a decode step reads in place
    (slicing a layer out of the stack inside the step copies it, every step), and the LM head is
    a plain [rows, embed] x [embed, vocab] product (on CPU much faster than contracting the
    embedding's minor axis); token lookups read its columns."""
    stacked = params["h"]
    n = jax.tree.leaves(stacked)[0].shape[0]
    out = {name: value for name, value in params.items() if name not in ("h", "word_embeddings")}
    out["embedding_t"] = jnp.transpose(params["word_embeddings"]["embedding"])
    out["layers"] = tuple(jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n))
    return out


# Logical axes of a cache entry (one array per layer).
CACHE_AXES = {"key": ("batch", "heads", "length", "kv"), "value": ("batch", "heads", "length", "kv"),
              "prefix_key": ("heads", "length", "kv"), "prefix_value": ("heads", "length", "kv")}


def init_cache(config: BloomConfig, batch: int, cache_length: int, dtype=None, *,
               prefix: Mapping[str, Any] | None = None) -> dict[str, tuple[Array, ...]]:
    """A zero KV cache: key/value, one [batch, heads, cache_length, head_dim] array per layer
    (heads-major: a decode step reads it without a transpose).

    prefix: a shared prefix's prefix_key/value ([heads, P, head_dim] per layer, `prefix_entries`),
    kept once: every row attends to them before its own cache; they are neither recomputed nor
    copied per row.
    """
    dtype = dtype or config.cache_dtype
    shape = (batch, config.n_head, cache_length, config.head_dim)
    cache = {name: tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)) for name in ("key", "value")}
    if prefix is not None:
        cache.update({name: tuple(x.astype(dtype) for x in arrays) for name, arrays in prefix.items()})
    return cache


def prefix_entries(prefix: Mapping[str, Any], dtype=None) -> dict[str, tuple[Array, ...]]:
    """prefix_key/value of a batch-1 cache (the keys and values of a shared prefix)."""
    if prefix["key"][0].shape[0] != 1:
        raise ValueError(f"a shared prefix comes from a batch-1 cache, got batch {prefix['key'][0].shape[0]}")
    return {f"prefix_{name}": tuple(x[0].astype(dtype or x.dtype) for x in prefix[name])
            for name in ("key", "value")}


def cache_logical_axes(cache: Mapping[str, Any]) -> dict[str, Any]:
    """The logical PartitionSpec of every array of a cache from `init_cache`."""
    return {name: tuple(jax.sharding.PartitionSpec(*CACHE_AXES[name]) for _ in arrays)
            for name, arrays in cache.items()}


def cached_forward(config: BloomConfig, params: Mapping[str, Any], cache: Mapping[str, Any],
                   input_ids: Array, lengths: Array, *, empty: bool = False,
                   logits_at: Array | None = None) -> tuple[Array, dict]:
    """The model over a KV cache: row b's next T tokens `input_ids` [batch, T], after the
    `lengths[b]` tokens its cache already holds (columns [0, lengths[b]) of `cache`, behind the
    shared prefix if the cache has one).

    Row b's tokens attend to the prefix, its cached tokens and its own earlier tokens of this
    call, with ALiBi positions P + lengths[b] + t, exactly as the whole sequence would in
    `BloomForCausalLM`. Tokens after a row's real ones (right padding) change nothing before them.
    params: `decoding_params(...)`. empty: nothing is cached yet (a prefill): the cache is not
    read, and the returned cache holds just this call's keys/values ([batch, heads, T, head_dim]).
    Otherwise they are written at columns lengths[b] + t (the caller keeps them inside the cache).
    Returns (logits [batch, vocab] fp32 at this call's position logits_at [batch] (default the
    last), the cache).
    """
    cfg = config
    batch, length = input_ids.shape
    lengths = jnp.asarray(lengths, jnp.int32)
    embedding_t = params["embedding_t"]  # [embed, vocab]
    h = jnp.moveaxis(jnp.take(embedding_t, input_ids, axis=1), 0, -1).astype(cfg.compute_dtype)  # [batch, T, embed]
    h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
    h = layer_norm(cfg, "ln").apply({"params": params["word_embeddings_layernorm"]}, h)

    slopes = jnp.asarray(alibi_slopes(cfg.n_head))[None, :, None, None]  # [1, heads, 1, 1]
    big_neg = jnp.finfo(jnp.float32).min
    has_prefix = "prefix_key" in cache
    prefix_length = cache["prefix_key"][0].shape[1] if has_prefix else 0
    t = jnp.arange(length)
    own = (prefix_length + lengths[:, None] + t[None, :]).astype(jnp.float32)  # [batch, T] positions
    causal = t[None, :] <= t[:, None]  # [q, k]
    bias = jnp.where(causal[None, None], slopes * own[:, None, None, :], big_neg)  # [batch, heads, T, T]
    context = {}
    if has_prefix:
        context["prefix_bias"] = slopes * jnp.arange(prefix_length, dtype=jnp.float32)  # [1, heads, 1, P]
    if not empty:  # query t of row b sees its cache columns up to its own, lengths[b] + t
        column = jnp.arange(cache["key"][0].shape[2])
        seen = column[None, None, :] <= lengths[:, None, None] + t[None, :, None]  # [batch, T, C]
        context["cache_bias"] = jnp.where(seen[:, None], slopes * (prefix_length + column).astype(jnp.float32),
                                          big_neg)  # [batch, heads, T, C]

    block = BloomBlock(cfg, decode=True)
    new = {"key": [], "value": []}
    for i, layer in enumerate(params["layers"]):
        kv = {}
        if has_prefix:
            kv.update(prefix_key=cache["prefix_key"][i], prefix_value=cache["prefix_value"][i])
        if not empty:
            kv.update(cached_key=cache["key"][i], cached_value=cache["value"][i], write_at=lengths)
        h, (k, v) = block.apply({"params": layer}, h, bias, context, kv)
        new["key"].append(k)
        new["value"].append(v)

    at = jnp.full((batch,), length - 1, jnp.int32) if logits_at is None else logits_at
    h = jnp.take_along_axis(h, at[:, None, None], axis=1)[:, 0]  # [batch, embed]
    h = layer_norm(cfg, "ln").apply({"params": params["ln_f"]}, h)
    logits = jnp.dot(h, embedding_t.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)
    out = {name: tuple(arrays) for name, arrays in new.items()}
    if has_prefix:
        out.update(prefix_key=cache["prefix_key"], prefix_value=cache["prefix_value"])
    return nn.with_logical_constraint(logits, ("batch", "vocab")), out
