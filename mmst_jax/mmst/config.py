"""Plain settings of an MMST run (gin binds them at the edge, in `configurables.py`)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from mmst_jax.mmst.modes import ModeConfig
from mmst_jax.models.bloom import DTYPES, REMAT_POLICIES, BloomConfig


@dataclasses.dataclass(frozen=True)
class ModelPolicy:
    """How every model of a run computes, whatever its checkpoint stores: `dtype` of matmuls and
    activations, `param_dtype` of the parameters and AdamW moments while fine-tuning (None: as the
    checkpoint stores them), `remat_policy` of fine-tuning (models.bloom.REMAT_POLICIES), and
    `kv_cache_dtype` of decoding (None: the compute dtype, so bf16 models decode with a bf16 cache)."""

    dtype: str = "float32"
    param_dtype: str | None = None
    remat_policy: str = "none"
    kv_cache_dtype: str | None = None

    def __post_init__(self):
        for name in ("dtype", "param_dtype", "kv_cache_dtype"):
            value = getattr(self, name)
            if value is not None and value not in DTYPES:
                raise ValueError(f"mmst.ModelPolicy.{name}={value!r}; choose one of {sorted(DTYPES)}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"mmst.ModelPolicy.remat_policy={self.remat_policy!r}; choose one of "
                             f"{sorted(REMAT_POLICIES)}")

    def apply(self, config: BloomConfig) -> BloomConfig:
        """`config` (an architecture, as a checkpoint stores it) under this policy."""
        return dataclasses.replace(config, dtype=self.dtype, param_dtype=self.param_dtype or config.param_dtype,
                                   remat_policy=self.remat_policy, kv_cache_dtype=self.kv_cache_dtype)


@dataclasses.dataclass(frozen=True)
class Generation:
    """How the model is sampled in each stage.

    Training problems: `num_samples` per problem and method at `temperature` (top_k, top_p).
    Translations: `translation_samples` per verified solution at `translation_temperature`.
    Evaluation: greedy (accuracy) and, if `vote_samples` > 0, that many at `vote_temperature` (maj@k).
    `batch_size` counts rows decoding at once (the sampler's slots; a multiple of the devices rows
    are split over); `chunk_rows` rows are written per chunk file, the unit of resumption inside a
    sampling stage. `max_cache_length`: KV-cache columns per row, prompt plus new tokens (None: the
    longest prompt of the run's tasks, rounded up to `length_bucket`, plus `max_new_tokens`).
    """

    num_samples: int = 4
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 96
    translation_samples: int = 1
    translation_temperature: float = 0.0
    vote_samples: int = 0
    vote_temperature: float = 0.8
    batch_size: int = 64
    chunk_rows: int = 512
    length_bucket: int = 32
    max_cache_length: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("num_samples", "translation_samples", "max_new_tokens", "batch_size", "chunk_rows",
                     "length_bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"Generation.{name} must be >= 1, got {getattr(self, name)}")
        if self.vote_samples < 0:
            raise ValueError(f"Generation.vote_samples must be >= 0, got {self.vote_samples}")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Verifier settings: seconds and MiB per program, lanes (None: the verifier's default), how
    many times a crashed verifier is restarted before the records it left are counted lost, and
    `allow_unprotected`: run model-written code even when the sandbox lacks a protection (it
    refuses otherwise); loudly, and each record it verified says `unprotected: true`."""

    timeout_s: float = 2.0
    memory_mb: int = 256
    lanes: int | None = None
    restarts: int = 1
    allow_unprotected: bool = False


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One MMST run: rounds, mode, model policy, generation, verifier limits, token budgets.

    `train_problems`: problems sampled per round (0: every training problem), drawn per round with
    a seeded shuffle. `eval_problems`: test problems per dataset (0: all). `feature_lengths`:
    {"inputs": N, "targets": M} token budget of training examples (longer ones are dropped).
    """

    rounds: int = 3
    mode: ModeConfig = ModeConfig()
    policy: ModelPolicy = ModelPolicy()
    generation: Generation = Generation()
    limits: Limits = Limits()
    train_problems: int = 0
    eval_problems: int = 0
    feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 160, "targets": 96})
    progress: bool = True

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"RunConfig.rounds must be >= 0, got {self.rounds}")
        if set(self.feature_lengths) != {"inputs", "targets"}:
            raise ValueError(f"feature_lengths must have 'inputs' and 'targets', got {dict(self.feature_lengths)}")
