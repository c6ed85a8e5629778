"""Per-device memory, FLOPs and time of a run's programs: analytic estimates and the figures XLA
reports for the compiled executables, side by side (`plan`, which `mmst plan` runs).

    programs = mmst_jax.mmst.programs.describe(settings, prompts)   # what `mmst run` executes
    report = plan(programs, mesh_config=MeshConfig(shape={"fsdp": 8}, num_devices=8))
    print(format_table(report["rows"]))

Each program compiled is the very program the run executes: the fine-tuning step
(training.lower_train_step) and the sampler's decode loop (sampling.decode.lower_generate) with the
run's batch, micro-batches, sequence and cache lengths, dtypes and remat. Nothing is allocated, so
the devices may be simulated host devices or ahead-of-time TPU devices.

Analytic model (bytes per device; P = parameters, c = compute dtype bytes, p = parameter dtype
bytes (the AdamW moments take the parameters' dtype), k = cache dtype bytes; d, f, t = data, fsdp,
tensor mesh sizes; B_dev = B / (micro-batches d f)):

  parameters      P p / (f t)                       FSDP over `embed`, tensor over heads/mlp/vocab
  gradients       P p / (f t)   (+ P 4 / (f t): the fp32 accumulator with micro-batches)
  optimizer       2 P p / (f t)                     AdamW's two moments
  activations     saved:   n_layer B_dev L E c      `full` remat keeps one [B, L, E] per layer
                  working: one layer's forward+backward working set, and the fp32 logits
  KV cache        2 n_layer B_dev C (H/t) D k       C = cache length (decode)

Compiled figures come from `Compiled.memory_analysis()`: arguments, outputs, temporaries; the
peak is arguments + outputs - aliased + temporaries. Time per round is FLOPs (6N per trained token,
2N per prefilled or generated token) over the slice's peak at an assumed MFU (stated in the report).
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from typing import Any, Callable, Sequence

import numpy as np

from mmst_jax.models.bloom import DTYPES
from mmst_jax.sharding import MeshConfig

GIB = 2**30

# Peak bf16 FLOP/s of one chip, by the TPU generation a topology names (MeshConfig.tpu_topology).
CHIP_PEAK_FLOPS = {"v4": 275e12, "v5p": 459e12, "v5e": 197e12, "v6e": 918e12}
TRAIN_MFU, DECODE_MFU = 0.4, 0.1  # assumed: decoding is memory-bound


def _bytes(dtype) -> int:
    return np.dtype(DTYPES[dtype] if isinstance(dtype, str) else dtype).itemsize


def analytic_train(program, mesh_shape: tuple[int, int, int]) -> dict[str, float]:
    """Bytes per device of a programs.TrainProgram."""
    config, tc = program.model, program.train
    d, f, t = mesh_shape
    p, c = _bytes(config.param_dtype), _bytes(config.dtype)
    n = config.num_params()
    e, h, L = config.hidden_size, config.n_head, program.length
    b = tc.batch_size / (tc.micro_batches * d * f)
    params = n * p / (f * t)
    # One layer's working set: qkv, context, attention scores and probabilities (fp32), the MLP
    # hidden and its GeLU, residual stream copies; doubled for the backward pass.
    layer = b * L * (3 * e / t + e / t + 2 * 4 * e / t + 3 * e) * c + b * (h / t) * L * L * (4 + 4 + c)
    saved = {"full": b * L * e * c, "nothing_saveable": b * L * e * c}.get(config.remat_policy, layer / 2)
    logits = b * L * config.vocab_size / t * 4 * 2
    out = {
        "parameters": params,
        "gradients": params + (n * 4 / (f * t) if tc.micro_batches > 1 else 0.0),
        "optimizer": 2 * params,
        "activations": config.n_layer * saved + 2 * layer + logits,
    }
    out["total"] = sum(out.values())
    return out


def analytic_decode(program, mesh_shape: tuple[int, int, int]) -> dict[str, float]:
    """Bytes per device of a programs.DecodeProgram."""
    config = program.model
    d, f, t = mesh_shape
    p, k = _bytes(config.param_dtype), _bytes(config.cache_dtype)
    b = program.slots / (d * f)
    kv = 2 * config.n_layer * b * program.cache_length * (config.n_head / t) * config.head_dim * k
    working = b * (config.vocab_size / t * 4 + (config.n_head / t) * program.cache_length * 4 * 2)
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
    header = ("| slice | devices | mesh d×f×t | program | compiled for | compiled peak GiB | analytic GiB | "
              "HBM GiB | fits |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        compiled = "—" if r.get("compiled_peak") is None else f"{r['compiled_peak'] / GIB:.3g}"
        if (r.get("compiled") or {}).get("out_of_memory"):
            compiled = f"> {compiled} (refused)"
        verdict = {True: "yes", False: "no", None: "—"}[r.get("fits")]
        hbm = "—" if r.get("hbm_gib") is None else f"{r['hbm_gib']:g}"
        lines.append(f"| {r['slice']} | {r['devices']} | {'×'.join(map(str, r['mesh']))} | {r['step']} | "
                     f"{r.get('target', '—')} | "
                     f"{compiled} | {r['analytic_total'] / GIB:.3g} | {hbm} | {verdict} |")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=float)


# --------------------------------------------------------------------------------------------
# Compiling the programs and planning a topology
# --------------------------------------------------------------------------------------------
def compile_program(program, mesh, rules):
    """The compiled executable of a programs.TrainProgram or programs.DecodeProgram."""
    from mmst_jax import training
    from mmst_jax.sampling import decode

    if hasattr(program, "train"):
        return training.lower_train_step(program.model, program.train, mesh, rules, length=program.length).compile()
    token_rules = decode.TokenRules(decode.SamplingConfig(temperature=program.temperature, top_k=program.top_k,
                                                          top_p=program.top_p, max_new_tokens=program.max_new_tokens),
                                    program.model.eos_token_id, program.model.pad_token_id or 0)
    return decode.lower_generate(program.model, mesh, rules, slots=program.slots, cache_length=program.cache_length,
                                 rules_=token_rules).compile()


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


def chip_peak_flops(mesh_config: MeshConfig) -> float | None:
    """Peak FLOP/s of one chip of a TPU topology (None: not a TPU topology)."""
    if not mesh_config.tpu_topology:
        return None
    return CHIP_PEAK_FLOPS.get(mesh_config.tpu_topology.split(":")[0])


def _measure(program, mesh, rules) -> tuple[dict | None, float]:
    """(compiled figures, compile seconds). A program the TPU compiler refuses for exceeding HBM is a
    verdict, reported as `out_of_memory` figures."""
    start = time.perf_counter()
    try:
        measured = compiled_memory(compile_program(program, mesh, rules))
    except Exception as e:  # noqa: BLE001 - only the compiler's out-of-memory refusal is kept
        measured = out_of_memory(e)
        if measured is None:
            raise
    return measured, time.perf_counter() - start


def device_memory_limit(mesh) -> float | None:
    """Bytes of memory per device of a mesh's accelerators, read on one of this process's devices
    (None: not reported, as on CPU)."""
    import jax

    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    stats = local[0].memory_stats() if local else None
    return float(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def memory_problems(programs, mesh, rules, limit_bytes: float, headroom: float = 0.9) -> list[str]:
    """The programs whose compiled peak exceeds `headroom` of `limit_bytes` per device, as messages
    naming the program and the settings that size it (each distinct program compiled once)."""
    out, seen = [], set()
    for program in programs:
        key = (type(program).__name__,) + tuple(
            getattr(program, f, None) for f in ("train", "length", "slots", "cache_length", "temperature", "top_k",
                                                "top_p", "max_new_tokens"))
        if key in seen:
            continue
        seen.add(key)
        measured, _ = _measure(program, mesh, rules)
        if measured.get("out_of_memory") or not fits(measured["peak"], limit_bytes / GIB, headroom):
            sizes = ("TrainConfig.batch_size / micro_batches, the feature lengths or ModelPolicy.remat_policy"
                     if hasattr(program, "train") else "mmst.Generation.batch_size or max_cache_length")
            out.append(f"{program.name}: the compiled program needs {measured['peak'] / GIB:.1f} GiB per device, "
                       f"more than {headroom:.0%} of the {limit_bytes / GIB:.1f} GiB there: lower {sizes}, or use a "
                       "larger slice")
    return out


def plan(programs, *, mesh_config: MeshConfig, devices: Callable[[str, MeshConfig], Sequence] | None = None,
         compile: bool = True, target: str = "auto") -> dict[str, Any]:
    """The plan of a run's programs (mmst_jax.mmst.programs.RunPrograms) on one topology: a row per
    program (analytic and, with `compile`, compiled memory for `target`: 'auto', 'tpu' or 'cpu'),
    and the FLOPs and time of one round. `devices(target, mesh_config)` gives the slice's devices to
    compile for (default: the devices JAX has)."""
    from mmst_jax.mmst import programs as programs_lib

    num_devices = mesh_config.num_devices
    if num_devices is None:
        raise ValueError("the topology does not say how many devices its slice has: set "
                         "partitioning.MeshConfig.num_devices (the files in gin_configs/topologies do)")
    mesh_shape = mesh_config.resolve(num_devices)
    target = resolve_target(target, mesh_config)
    mesh = None
    if compile:
        import jax

        mesh = mesh_config.make_mesh(devices(target, mesh_config) if devices else jax.devices())
    rows = []
    for program in programs:
        is_train = hasattr(program, "train")
        analytic = (analytic_train if is_train else analytic_decode)(program, mesh_shape)
        measured, seconds = _measure(program, mesh, mesh_config.rules) if compile else (None, None)
        total = measured["peak"] if measured else analytic["total"]
        verdict = False if measured and measured.get("out_of_memory") else fits(total, mesh_config.hbm_gib)
        config = program.model
        shape = ({"batch": program.train.batch_size, "micro_batches": program.train.micro_batches,
                  "length": program.length} if is_train else
                 {"slots": program.slots, "cache_length": program.cache_length,
                  "max_new_tokens": program.max_new_tokens, "longest_prompt": program.longest_prompt,
                  "rows_per_round": program.rows, "temperature": program.temperature})
        rows.append({
            "slice": mesh_config.name, "devices": num_devices, "mesh": list(mesh_shape), "step": program.name,
            "target": target if compile else "analytic", "dtype": config.dtype, "param_dtype": config.param_dtype,
            "kv_cache_dtype": np.dtype(config.cache_dtype).name, "remat": config.remat_policy,
            "params": config.num_params(), "shape": shape, "hbm_gib": mesh_config.hbm_gib, "compiled": measured,
            "compiled_peak": measured["peak"] if measured else None, "compile_seconds": seconds,
            "analytic": analytic, "analytic_total": analytic["total"], "fits": verdict,
        })
    flops = programs_lib.round_flops(programs)
    peak = chip_peak_flops(mesh_config)
    seconds = (programs_lib.round_seconds(flops, devices=num_devices, peak_flops=peak, train_mfu=TRAIN_MFU,
                                          decode_mfu=DECODE_MFU) if peak else {k: None for k in flops})
    known = [v for v in seconds.values() if v is not None]
    cost = {"flops": flops, "seconds": seconds, "chip_peak_flops": peak,
            "assumed_mfu": {"finetune": TRAIN_MFU, "decode": DECODE_MFU},
            "total_seconds": sum(known) if known and len(known) == len(seconds) else None}
    return {"rows": rows, "round": cost}


def format_cost(cost: dict[str, Any]) -> str:
    """A Markdown table of one round's FLOPs and estimated time."""
    lines = ["| program | FLOPs per round | assumed MFU | hours on the slice |", "|---|---|---|---|"]
    for name, f in cost["flops"].items():
        s = cost["seconds"].get(name)
        mfu = cost["assumed_mfu"]["finetune" if name == "finetune" else "decode"]
        lines.append(f"| {name} | {'—' if f is None else f'{f:.2g}'} | {mfu:.0%} | "
                     f"{'—' if s is None else f'{s / 3600:.2f}'} |")
    total, known = cost["total_seconds"], [f for f in cost["flops"].values() if f is not None]
    flops = f"{sum(known):.2g}" if len(known) == len(cost["flops"]) else "—"
    lines.append(f"| **round** | {flops} | | {'—' if total is None else f'**{total / 3600:.2f}**'} |")
    return "\n".join(lines)
