"""BLOOM (BigScience, 2022) in Flax linen, as published: numerically the model of `transformers`.

    h_0 = LayerNorm(E[x])                                       word embeddings + embedding LayerNorm
    for each layer l (scanned):
      a   = LN_in(h)
      h'  = Attn(a) + r,        r = a if post-LN residual else h
      m   = LN_post(h')
      h   = W_out gelu_tanh(W_in m) + r', r' = m if post-LN residual else h'
    logits = LN_f(h) E^T                                        LM head tied to the embeddings

    Attn: softmax(q k^T / sqrt(d) + m_h * pos(k) + mask) v, with ALiBi slopes m_h (any head count).

Every parameter and activation carries logical axis names (`batch`, `length`, `embed`, `heads`, `kv`,
`mlp`, `vocab`, `layers`), mapped to mesh axes by the partitioning rules. Layers are one scanned
block (`nn.scan`) under a remat policy, so compile time does not grow with depth.

Masks: `attention_mask` [batch, length] marks real tokens (left or right padding, as in HF);
`segment_ids` [batch, length] marks packed examples (0 = padding), which never see each other and
whose ALiBi positions restart at 0. Decoding over a KV cache runs the same blocks
(`mmst_jax.models.bloom_cache`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

REMAT_POLICIES = {
    "none": None,  # no rematerialisation: keep every activation
    "full": "full",  # save nothing inside a layer: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class BloomConfigError(ValueError):
    """A model configuration that cannot describe a BLOOM; the message says what to fix."""


# Published BigScience hyperparameters: (hidden_size, n_layer, n_head).
_PRESETS = {
    "tiny": dict(vocab_size=1024, hidden_size=64, n_layer=2, n_head=4),
    "bloom-560m": dict(hidden_size=1024, n_layer=24, n_head=16),
    "bloom-1b1": dict(hidden_size=1536, n_layer=24, n_head=16),
    "bloom-1b7": dict(hidden_size=2048, n_layer=24, n_head=16),
    "bloom-3b": dict(hidden_size=2560, n_layer=30, n_head=32),
    "bloom-7b1": dict(hidden_size=4096, n_layer=30, n_head=32),
    "bloom-176b": dict(hidden_size=14336, n_layer=70, n_head=112),
}

# HF config.json spellings -> our field names (published BLOOM configs use both).
_HF_KEY_ALIASES = {
    "n_embed": "hidden_size", "hidden_size": "hidden_size",
    "n_layer": "n_layer", "num_hidden_layers": "n_layer",
    "n_head": "n_head", "num_attention_heads": "n_head",
    "vocab_size": "vocab_size", "layer_norm_epsilon": "layer_norm_epsilon",
    "initializer_range": "initializer_range",
    "apply_residual_connection_post_layernorm": "apply_residual_connection_post_layernorm",
    "unk_token_id": "unk_token_id", "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
}


@dataclasses.dataclass(frozen=True)
class BloomConfig:
    """Architecture (the first group) and run-time policy (dtype, remat) of a BLOOM."""

    vocab_size: int = 250880
    hidden_size: int = 64
    n_layer: int = 2
    n_head: int = 8
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    apply_residual_connection_post_layernorm: bool = False
    unk_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 3
    # Run-time policy, not part of the published architecture.
    dtype: str = "float32"  # compute dtype of matmuls and activations
    param_dtype: str = "float32"  # storage dtype of the parameters
    remat_policy: str = "none"  # one of REMAT_POLICIES
    kv_cache_dtype: str | None = None  # dtype of the decoding KV cache; None: the compute dtype

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BloomConfigError(f"BloomConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.n_head:
            raise BloomConfigError(f"hidden_size {self.hidden_size} is not divisible by n_head {self.n_head}: "
                              "every head must have the same width")
        for name in ("dtype", "param_dtype") + (("kv_cache_dtype",) if self.kv_cache_dtype else ()):
            if getattr(self, name) not in DTYPES:
                raise BloomConfigError(f"BloomConfig.{name}={getattr(self, name)!r}; choose one of {sorted(DTYPES)}")
        if self.remat_policy not in REMAT_POLICIES:
            raise BloomConfigError(f"remat_policy={self.remat_policy!r}; choose one of {sorted(REMAT_POLICIES)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_head

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def params_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def cache_dtype(self):
        return DTYPES[self.kv_cache_dtype or self.dtype]

    def num_params(self) -> int:
        e, v, l = self.hidden_size, self.vocab_size, self.n_layer
        per_layer = 4 * e + (3 * e * e + 3 * e) + (e * e + e) + (4 * e * e + 4 * e) + (4 * e * e + e)
        return v * e + 2 * e + l * per_layer + 2 * e

    @classmethod
    def preset(cls, name: str, **overrides) -> "BloomConfig":
        """A published BLOOM (`bloom-560m` … `bloom-176b`) or `tiny`; keyword overrides win."""
        if name not in _PRESETS:
            raise BloomConfigError(f"unknown BLOOM preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, path_or_dict: str | os.PathLike | Mapping[str, Any], **overrides) -> "BloomConfig":
        """Reads an HF BLOOM `config.json` (a path, a directory holding one, or its dict).

        Both spellings of the published keys are accepted (`n_embed`/`hidden_size`,
        `num_attention_heads`/`n_head`, `num_hidden_layers`/`n_layer`). Special ids come from the file.
        """
        source = "the given dict"
        if isinstance(path_or_dict, Mapping):
            raw = dict(path_or_dict)
        else:
            from etils import epath

            from mmst_jax import storage

            path = epath.Path(path_or_dict)  # local or gs://
            with storage.naming(path):
                if path.is_dir():
                    path = path / "config.json"
                source = os.fspath(path)
                if not path.exists():
                    storage.check_bucket(path)  # a missing or refused bucket says so
                    raise BloomConfigError(f"{path} does not exist: an HF BLOOM directory must hold config.json")
                text = path.read_text()
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise BloomConfigError(f"{path} is not valid JSON ({e}); restore the model's config.json") from e
        model_type = raw.get("model_type")
        if model_type != "bloom":
            raise BloomConfigError(f"{source} describes model_type={model_type!r}, not 'bloom': "
                              "point at a BLOOM checkpoint's config.json")
        fields = {}
        for key, value in raw.items():
            name = _HF_KEY_ALIASES.get(key)
            if name is None:
                continue
            if isinstance(value, list):  # e.g. eos_token_id may be a list in newer configs
                value = value[0] if value else None
            if name in fields and fields[name] != value:
                raise BloomConfigError(f"{source} gives {name} twice with different values "
                                  f"({fields[name]} and {value} under {key!r}); keep one")
            fields[name] = value
        missing = [k for k in ("hidden_size", "n_layer", "n_head", "vocab_size") if k not in fields]
        if missing:
            raise BloomConfigError(f"{source} lacks {missing}: not a complete BLOOM config.json")
        return cls(**{**fields, **overrides})

    def to_hf(self) -> dict[str, Any]:
        """The config.json dict that `transformers.BloomConfig` reads."""
        return {
            "architectures": ["BloomForCausalLM"], "model_type": "bloom",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "n_layer": self.n_layer, "n_head": self.n_head,
            "layer_norm_epsilon": self.layer_norm_epsilon, "initializer_range": self.initializer_range,
            "apply_residual_connection_post_layernorm": self.apply_residual_connection_post_layernorm,
            "unk_token_id": self.unk_token_id, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
            "hidden_dropout": 0.0, "attention_dropout": 0.0, "pretraining_tp": 1,
            "slow_but_exact": False, "tie_word_embeddings": True, "use_cache": True,
        }


# --------------------------------------------------------------------------------------------
# ALiBi and masks
# --------------------------------------------------------------------------------------------
def alibi_slopes(n_head: int) -> np.ndarray:
    """BLOOM's ALiBi slopes for any head count: the geometric sequence of the largest power of two
    below n_head, then every other slope of the sequence for twice that many heads."""
    def geometric(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_head))
    slopes = geometric(closest)
    if closest != n_head:
        slopes += geometric(2 * closest)[0::2][: n_head - closest]
    return np.asarray(slopes, dtype=np.float32)


def token_positions(valid: Array, segment_ids: Array | None = None) -> Array:
    """ALiBi positions [batch, length]: count of real tokens before each one in its own sequence
    (HF's `(cumsum(mask) - 1) * mask`), restarting at 0 at every packed segment."""
    valid = valid.astype(jnp.int32)
    positions = (jnp.cumsum(valid, axis=-1) - 1) * valid
    if segment_ids is None:
        return positions
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=-1)
    index = jnp.arange(segment_ids.shape[-1])[None, :]
    segment_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return (index - segment_start) * valid


def attention_bias(config: BloomConfig, key_valid: Array, key_positions: Array, query_index: Array,
                   key_segments: Array | None = None, query_segments: Array | None = None) -> Array:
    """Additive bias [batch, heads, q, k] in fp32: ALiBi plus -inf-like entries for masked keys.

    query_index [q] / key index are cache slots (or sequence indices): a query sees keys at or
    before its own slot that are real tokens (and, when packed, of its own segment).
    """
    key_index = jnp.arange(key_valid.shape[-1])
    visible = (key_index[None, :] <= query_index[:, None])[None]  # [1, q, k]
    visible = visible & key_valid[:, None, :].astype(bool)
    if key_segments is not None:
        visible = visible & (query_segments[:, :, None] == key_segments[:, None, :])
    slopes = jnp.asarray(alibi_slopes(config.n_head))
    alibi = slopes[None, :, None, None] * key_positions[:, None, None, :].astype(jnp.float32)
    big_neg = jnp.finfo(jnp.float32).min
    return jnp.where(visible[:, None], alibi, big_neg)  # [batch, heads, q, k]


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
def _dense_init(config: BloomConfig, names: tuple):
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), names)


def layer_norm(config: BloomConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, param_dtype=config.params_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


class Projection(nn.Module):
    """y = x . kernel + bias, contracting the last `contract` axes of x, with every kernel axis
    logically named. (Flax's DenseGeneral initialises through a flat 2-D kernel, whose boxed names
    cannot match a multi-dimensional kernel once a mesh is active.)"""

    config: BloomConfig
    features: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]  # input axes, then output axes
    contract: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        kernel = self.param("kernel", _dense_init(cfg, self.kernel_axes),
                            x.shape[-self.contract:] + tuple(self.features), cfg.params_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(
            nn.initializers.zeros, self.kernel_axes[self.contract:]), tuple(self.features), cfg.params_dtype)
        y = jnp.tensordot(x.astype(cfg.compute_dtype), kernel.astype(cfg.compute_dtype), axes=self.contract)
        return y + bias.astype(cfg.compute_dtype)


class BloomAttention(nn.Module):
    """Multi-head attention with ALiBi and BLOOM's fused query_key_value ([heads, 3, head_dim]).

    Keys come in up to two parts, scored together under one softmax:
      prefix  [heads, P, head_dim]         a shared prefix, held once for the whole batch
      own     [batch, heads, C, head_dim]  the row's cache (kv_cache `cached_key`/`cached_value`),
                                           this call's keys first written into it at columns
                                           `write_at`[b] + t; or, without a cache, this call's keys
    Cached keys are stored heads-major, so a decode step reads them without a transpose. Writing
    before reading lets a loop update the cache in place (reading the old cache and writing a new
    one would copy it). Returns the output [batch, T, embed] and the row's keys/values (the updated
    cache, or this call's [batch, heads, T, head_dim]).
    """

    config: BloomConfig

    @nn.compact
    def __call__(self, x: Array, bias: Array, context: dict, kv_cache: dict) -> tuple[Array, tuple]:
        cfg = self.config
        qkv = Projection(cfg, (cfg.n_head, 3, cfg.head_dim), ("embed", "heads", None, "kv"),
                         name="query_key_value")(x)  # [batch, length, heads, 3, head_dim]
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        names = ("batch", "length", "heads", "kv")
        q = nn.with_logical_constraint(q, names)
        k = nn.with_logical_constraint(k, names)
        v = nn.with_logical_constraint(v, names)

        # (scores [batch|1, heads, q, keys] fp32, values, einsum for probs @ values) per key part
        parts = []
        if "prefix_key" in kv_cache:
            pk = nn.with_logical_constraint(kv_cache["prefix_key"], ("heads", "length", "kv"))
            pv = nn.with_logical_constraint(kv_cache["prefix_value"], ("heads", "length", "kv"))
            s = jnp.einsum("bqhd,hkd->bhqk", q, pk.astype(q.dtype), preferred_element_type=jnp.float32)
            parts.append((s / math.sqrt(cfg.head_dim) + context["prefix_bias"], pv, "bhqk,hkd->bqhd"))
        kt, vt = (jnp.swapaxes(x, 1, 2) for x in (k, v))  # [batch, heads, T, head_dim]
        if "cached_key" in kv_cache:
            own_bias = context["cache_bias"]
            kt, vt = (_write_rows(kv_cache[name], x.astype(kv_cache[name].dtype), kv_cache["write_at"])
                      for name, x in (("cached_key", kt), ("cached_value", vt)))
        else:
            own_bias = bias
        cache_names = ("batch", "heads", "length", "kv")
        kt, vt = (nn.with_logical_constraint(x, cache_names) for x in (kt, vt))
        s = jnp.einsum("bqhd,bhkd->bhqk", q, kt.astype(q.dtype), preferred_element_type=jnp.float32)
        parts.append((s / math.sqrt(cfg.head_dim) + own_bias, vt, "bhqk,bhkd->bqhd"))

        scores = jnp.concatenate([p[0] for p in parts], axis=-1) if len(parts) > 1 else parts[0][0]
        probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)  # [batch, heads, q, keys]
        probs = nn.with_logical_constraint(probs, ("batch", "heads", "length", None))
        out, offset = None, 0
        for s, values, spec in parts:
            width = s.shape[-1]
            piece = jnp.einsum(spec, probs[..., offset:offset + width], values.astype(probs.dtype))
            out = piece if out is None else out + piece  # [batch, q, heads, head_dim]
            offset += width
        out = nn.with_logical_constraint(out, names)
        out = Projection(cfg, (cfg.hidden_size,), ("heads", "kv", "embed"), contract=2,
                         name="dense")(out)  # [batch, length, embed]
        return nn.with_logical_constraint(out, ("batch", "length", "embed")), (kt, vt)


class BloomMLP(nn.Module):
    config: BloomConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        h = nn.Dense(4 * cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
                     kernel_init=_dense_init(cfg, ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                     name="dense_h_to_4h")(x)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = jax.nn.gelu(h, approximate=True)  # BLOOM's tanh approximation
        out = nn.Dense(cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
                       kernel_init=_dense_init(cfg, ("mlp", "embed")),
                       bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                       name="dense_4h_to_h")(h)
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))


class BloomBlock(nn.Module):
    """One pre-LayerNorm decoder layer; the call signature is nn.scan's:
    (carry h, broadcast bias, broadcast context, scanned per-layer kv_cache) -> (h, this layer's (k, v))."""

    config: BloomConfig
    decode: bool = False

    @nn.compact
    def __call__(self, h: Array, bias: Array, context: dict, kv_cache: dict) -> tuple[Array, Any]:
        cfg = self.config
        a = layer_norm(cfg, "input_layernorm")(h)
        residual = a if cfg.apply_residual_connection_post_layernorm else h
        attn, kv = BloomAttention(cfg, name="self_attention")(a, bias, context, kv_cache)
        h = attn + residual
        m = layer_norm(cfg, "post_attention_layernorm")(h)
        residual = m if cfg.apply_residual_connection_post_layernorm else h
        h = BloomMLP(cfg, name="mlp")(m) + residual
        # Only decoding needs the new keys/values; a training forward does not keep them.
        return nn.with_logical_constraint(h, ("batch", "length", "embed")), (kv if self.decode else None)


class BloomForCausalLM(nn.Module):
    """BLOOM with its tied LM head: `__call__` returns logits [batch, length, vocab].

    The layers are one scanned block (training, scoring). Decoding with a KV cache goes through
    `bloom_cache.cached_forward`, which runs the same blocks over the same parameters, unrolled.
    """

    config: BloomConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None, *,
                 segment_ids: Array | None = None) -> Array:
        cfg = self.config
        batch, length = input_ids.shape
        embed = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
            embedding_init=_dense_init(cfg, ("vocab", "embed")), name="word_embeddings")
        h = embed(input_ids)  # [batch, length, embed]
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        h = layer_norm(cfg, "word_embeddings_layernorm")(h)
        if segment_ids is not None:
            valid = segment_ids != 0
        elif attention_mask is not None:
            valid = attention_mask
        else:
            valid = jnp.ones((batch, length), jnp.int32)
        bias = attention_bias(cfg, valid, token_positions(valid, segment_ids), jnp.arange(length),
                              segment_ids, segment_ids)

        block = BloomBlock
        policy = REMAT_POLICIES[cfg.remat_policy]
        if policy is not None:
            block = nn.remat(block, prevent_cse=False,
                             policy=None if policy == "full" else policy)
        layers = nn.scan(
            block, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, 0), length=cfg.n_layer,
            metadata_params={nn.PARTITION_NAME: "layers"})
        h, _ = layers(cfg, name="h")(h, bias, {}, {})
        h = layer_norm(cfg, "ln_f")(h)
        logits = embed.attend(h)  # tied LM head: [batch, length, vocab]
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def init_params(config: BloomConfig, rng: Array, batch: int = 1, length: int = 8):
    """Random parameters (with their logical-axis metadata boxes removed)."""
    model = BloomForCausalLM(config)
    variables = model.init(rng, jnp.ones((batch, length), jnp.int32))
    return nn.unbox(variables["params"])


def _write_rows(cache: Array, new: Array, start: Array) -> Array:
    """cache [batch, heads, C, head_dim] with new [batch, heads, T, head_dim] written at columns
    start[b] .. start[b] + T of row b (in place inside a loop)."""
    return jax.vmap(lambda c, x, s: jax.lax.dynamic_update_slice_in_dim(c, x, s, axis=1))(cache, new, start)
