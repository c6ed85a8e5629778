"""Training throughput: tokens per second and model FLOPs utilisation (MFU) between two logs."""

from __future__ import annotations

import time

import jax

from mmst_jax.models.bloom import BloomConfig
from mmst_jax.training.config import TrainConfig

# Dense bf16 peak FLOP/s per device, for the MFU estimate (`TrainConfig.peak_flops` overrides).
KNOWN_PEAK_FLOPS = {"TPU v2": 45e12, "TPU v3": 123e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
                    "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12,
                    "NVIDIA A100": 312e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12}


def model_flops_per_token(config: BloomConfig, length: int) -> float:
    """Training FLOPs per token, 6N + 12 L H T (PaLM, appendix B): forward and backward of every
    matmul including the tied LM head, plus attention scores and mixing over `length` tokens."""
    return 6.0 * config.num_params() + 12.0 * config.n_layer * config.hidden_size * length


def device_peak_flops(tc: TrainConfig) -> float | None:
    """Peak FLOP/s of one device: `tc.peak_flops`, else the known figure of this device kind."""
    if tc.peak_flops:
        return tc.peak_flops
    kind = jax.devices()[0].device_kind
    return next((v for k, v in sorted(KNOWN_PEAK_FLOPS.items(), key=lambda kv: -len(kv[0]))
                 if kind.startswith(k)), None)


class Throughput:
    """Times the steps between two logs. The first log only starts the clock, so the first steps
    (which compile) are never timed."""

    def __init__(self, config: BloomConfig, tc: TrainConfig):
        self._config = config
        self._batch_size = tc.batch_size
        self._peak = device_peak_flops(tc)
        self._start: float | None = None
        self._steps = 0

    def step(self) -> None:
        self._steps += 1

    def measure(self, length: int) -> dict[str, float]:
        """`tokens_per_s` and, when the device's peak is known, `mfu` of the steps since the last
        measure (nothing at the first); batches of `length` tokens. Restarts the clock."""
        now = time.perf_counter()
        out = {}
        if self._start is not None:
            seconds = (now - self._start) / self._steps
            out["tokens_per_s"] = self._batch_size * length / seconds
            if self._peak:
                flops = model_flops_per_token(self._config, length) * self._batch_size * length
                out["mfu"] = flops / seconds / (self._peak * jax.device_count())
        self._start, self._steps = now, 0
        return out
