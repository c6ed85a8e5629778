"""The settings of a training run (`TrainConfig`) and the error raised for data that cannot train."""

from __future__ import annotations

import dataclasses


class TrainingDataError(ValueError):
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
