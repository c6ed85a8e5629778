"""Per-device memory of the fine-tuning step and the decode step: analytic estimates and the
figures XLA reports for the compiled executables, side by side (`plan`, which `mmst plan` runs).

    rows = plan(mesh_config=MeshConfig(shape={"fsdp": 8}, num_devices=8), model_preset="bloom-560m")
    print(format_table(rows))

The fine-tuning step compiled is the very program training runs (training.lower_train_step);
nothing is allocated, so the devices may be simulated host devices or ahead-of-time TPU devices.

Analytic model (bytes per device; P = parameters, c = compute dtype bytes, p = parameter dtype
bytes, o = optimizer moment bytes; d, f, t = data, fsdp, tensor mesh sizes; B_dev = B / (d f)):

  parameters      P p / (f t)                       FSDP over `embed`, tensor over heads/mlp/vocab
  gradients       P p / (f t)
  optimizer       2 P o / (f t)                     AdamW's two moments
  activations     saved:   n_layer B_dev L E c      `full` remat keeps one [B, L, E] per layer
                  working: one layer's forward+backward working set, and the fp32 logits
  KV cache        2 n_layer B_dev C (H/t) D c       C = cache length (decode)

Compiled figures come from `Compiled.memory_analysis()`: arguments, outputs, temporaries; the
peak is arguments + outputs - aliased + temporaries.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import time
from typing import Any, Callable, Sequence

import numpy as np

from mmst_jax.models.bloom import DTYPES, BloomConfig
from mmst_jax.sharding import MeshConfig

GIB = 2**30


def _bytes(dtype: str) -> int:
    return np.dtype(DTYPES[dtype]).itemsize


@dataclasses.dataclass(frozen=True)
class Workload:
    """What is planned: one fine-tuning step and one decode step."""

    train_batch: int  # global sequences per step
    train_length: int
    decode_batch: int  # global rows decoded together
    cache_length: int
    optimizer_dtype: str = "float32"  # AdamW moments


def analytic_train(config: BloomConfig, mesh_shape: tuple[int, int, int], w: Workload) -> dict[str, float]:
    d, f, t = mesh_shape
    p, c, o = _bytes(config.param_dtype), _bytes(config.dtype), _bytes(w.optimizer_dtype)
    n = config.num_params()
    e, h, hd, L = config.hidden_size, config.n_head, config.head_dim, w.train_length
    b = w.train_batch / (d * f)
    params = n * p / (f * t)
    # One layer's working set: qkv, context, attention scores and probabilities (fp32), the MLP
    # hidden and its GeLU, residual stream copies; doubled for the backward pass.
    layer = b * L * (3 * e / t + e / t + 2 * 4 * e / t + 3 * e) * c + b * (h / t) * L * L * (4 + 4 + c)
    saved = {"full": b * L * e * c, "nothing_saveable": b * L * e * c}.get(config.remat_policy, layer / 2)
    logits = b * L * config.vocab_size / t * 4 * 2
    out = {
        "parameters": params,
        "gradients": params,
        "optimizer": 2 * n * o / (f * t),
        "activations": config.n_layer * saved + 2 * layer + logits,
    }
    out["total"] = sum(out.values())
    return out


def analytic_decode(config: BloomConfig, mesh_shape: tuple[int, int, int], w: Workload) -> dict[str, float]:
    d, f, t = mesh_shape
    p, c = _bytes(config.param_dtype), _bytes(config.dtype)
    b = w.decode_batch / (d * f)
    kv = 2 * config.n_layer * b * w.cache_length * (config.n_head / t) * config.head_dim * c
    working = b * (config.vocab_size / t * 4 + (config.n_head / t) * w.cache_length * 4 * 2)
    out = {"parameters": config.num_params() * p / (f * t), "kv_cache": kv, "working": working}
    out["total"] = sum(out.values())
    return out


def compiled_memory(compiled) -> dict[str, float]:
    """Per-device bytes from a compiled executable's memory analysis."""
    m = compiled.memory_analysis()
    out = {
        "arguments": float(m.argument_size_in_bytes),
        "outputs": float(m.output_size_in_bytes),
        "aliased": float(m.alias_size_in_bytes),
        "temporaries": float(m.temp_size_in_bytes),
    }
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


def out_of_memory(error: Exception) -> dict[str, float] | None:
    """The TPU compiler's refusal of a program that exceeds HBM, as compiled figures (None if the
    error is something else). It reports the temporaries required; the peak is at least that."""
    match = re.search(r"RESOURCE_EXHAUSTED.*?required for HLO temporaries \(([\d.]+)G\) exceeds "
                      r"available HBM \(([\d.]+)G\)", str(error), re.S)
    if not match:
        return None
    temporaries = float(match.group(1)) * GIB
    return {"temporaries": temporaries, "peak": temporaries, "out_of_memory": True,
            "available": float(match.group(2)) * GIB}


def fits(total_bytes: float, hbm_gib: float | None, headroom: float = 0.9) -> bool | None:
    """Whether a per-device total fits in `headroom` of the HBM (None when HBM is unknown)."""
    if hbm_gib is None:
        return None
    return total_bytes <= headroom * hbm_gib * GIB


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of plan rows (GiB per device)."""
    header = ("| slice | devices | mesh d×f×t | step | compiled for | compiled peak GiB | analytic GiB | "
              "HBM GiB | fits |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        compiled = "—" if r.get("compiled_peak") is None else f"{r['compiled_peak'] / GIB:.1f}"
        if (r.get("compiled") or {}).get("out_of_memory"):
            compiled = f"> {compiled} (refused)"
        verdict = {True: "yes", False: "no", None: "—"}[r.get("fits")]
        hbm = "—" if r.get("hbm_gib") is None else f"{r['hbm_gib']:g}"
        lines.append(f"| {r['slice']} | {r['devices']} | {'×'.join(map(str, r['mesh']))} | {r['step']} | "
                     f"{r.get('target', '—')} | "
                     f"{compiled} | {r['analytic_total'] / GIB:.1f} | {hbm} | {verdict} |")
    return "\n".join(lines)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=float)


# --------------------------------------------------------------------------------------------
# Compiling the steps and planning a topology
# --------------------------------------------------------------------------------------------
def compile_train(config: BloomConfig, mesh, rules, workload: Workload):
    """The fine-tuning step training runs, for `workload.train_batch` rows of `train_length` tokens."""
    from mmst_jax import training

    tc = training.TrainConfig(batch_size=workload.train_batch, num_steps=10, progress_bar=False)
    return training.lower_train_step(config, tc, mesh, rules, length=workload.train_length).compile()


def compile_decode(config: BloomConfig, mesh, rules, workload: Workload):
    """One sampling step: a token per row against a KV cache of `cache_length` slots."""
    from mmst_jax.sampling.decode import lower_decode_step

    return lower_decode_step(config, mesh, rules, slots=workload.decode_batch,
                             cache_length=workload.cache_length).compile()


def have_libtpu() -> bool:
    """Whether the TPU compiler is installed (ahead-of-time compilation needs no TPU)."""
    return importlib.util.find_spec("libtpu") is not None


def resolve_target(target: str, mesh_config: MeshConfig) -> str:
    """'tpu' or 'cpu' for the target asked: 'auto' takes tpu when the topology names its TPU chip
    layout and libtpu is installed."""
    if target not in ("auto", "tpu", "cpu"):
        raise ValueError(f"plan target {target!r}: choose auto, tpu or cpu")
    can_tpu = bool(mesh_config.tpu_topology) and have_libtpu()
    if target == "auto":
        return "tpu" if can_tpu else "cpu"
    if target == "tpu" and not can_tpu:
        raise ValueError("target='tpu' needs libtpu (pip install 'jax[tpu]') and a topology with "
                         "partitioning.MeshConfig.tpu_topology")
    return target


def compile_steps(config: BloomConfig, mesh, rules, workload: Workload) -> dict[str, tuple[dict, float]]:
    """{step: (compiled figures, compile seconds)} of the train and decode steps. A program the
    TPU compiler refuses for exceeding HBM is a verdict, reported as `out_of_memory` figures."""
    compiled = {}
    for step, fn in (("train", compile_train), ("decode", compile_decode)):
        start = time.perf_counter()
        try:
            measured = compiled_memory(fn(config, mesh, rules, workload))
        except Exception as e:  # noqa: BLE001 - only the compiler's out-of-memory refusal is kept
            measured = out_of_memory(e)
            if measured is None:
                raise
        compiled[step] = (measured, time.perf_counter() - start)
    return compiled


def plan(*, mesh_config: MeshConfig, devices: Callable[[str, MeshConfig], Sequence] | None = None,
         model_preset: str = "bloom-176b", dtype: str = "bfloat16", param_dtype: str = "bfloat16",
         remat_policy: str = "full", train_batch: int = 256, train_length: int = 1024,
         decode_batch: int = 256, cache_length: int = 2048, compile: bool = True,
         target: str = "auto") -> list[dict]:
    """The plan rows (train, decode) of one topology: analytic figures, and with `compile` the
    compiled ones for `target` ('auto', 'tpu' or 'cpu'). `devices(target, mesh_config)` gives the
    slice's devices to compile for (default: the devices JAX has)."""
    num_devices = mesh_config.num_devices
    if num_devices is None:
        raise ValueError("the topology does not say how many devices its slice has: set "
                         "partitioning.MeshConfig.num_devices (the files in gin_configs/topologies do)")
    mesh_shape = mesh_config.resolve(num_devices)
    config = BloomConfig.preset(model_preset, dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy)
    workload = Workload(train_batch, train_length, decode_batch, cache_length, optimizer_dtype=param_dtype)
    target = resolve_target(target, mesh_config)
    compiled = {}
    if compile:
        import jax

        mesh = mesh_config.make_mesh(devices(target, mesh_config) if devices else jax.devices())
        compiled = compile_steps(config, mesh, mesh_config.rules, workload)
    rows = []
    for step, analytic in (("train", analytic_train(config, mesh_shape, workload)),
                           ("decode", analytic_decode(config, mesh_shape, workload))):
        measured, seconds = compiled.get(step, (None, None))
        total = measured["peak"] if measured else analytic["total"]
        verdict = False if measured and measured.get("out_of_memory") else fits(total, mesh_config.hbm_gib)
        rows.append({
            "slice": mesh_config.name, "devices": num_devices, "mesh": list(mesh_shape), "step": step,
            "target": target if compile else "analytic", "model": model_preset, "dtype": dtype,
            "param_dtype": param_dtype, "remat": remat_policy, "workload": dataclasses.asdict(workload),
            "hbm_gib": mesh_config.hbm_gib, "compiled": measured,
            "compiled_peak": measured["peak"] if measured else None, "compile_seconds": seconds,
            "analytic": analytic, "analytic_total": analytic["total"], "fits": verdict,
        })
    return rows
