"""Training speed: our sharded train step against a `transformers` + torch AdamW step, and MFU
against the matmul peak measured in the same run. Prints its figures as one JSON object on its
last line.

    python benchmarks/training.py            # the issue's sizes (several minutes on a 2-core CPU)
    python benchmarks/training.py --quick    # small sizes, a smoke run

A random BLOOM (hidden 512, 8 layers, 8 heads, vocab 32000), batch 8 x 512 tokens, every token a
target. Ours: `training.training_program`'s jitted step (loss, gradients, global-norm clipping,
AdamW with its decay mask, fp32 parameters and optimizer state), in fp32 compute and in bf16
compute. Theirs: `BloomForCausalLM(labels=...)`, `backward()`,
`torch.optim.AdamW.step()`, in fp32 (transformers' default) and under bf16 autocast. Every figure
is the median of `--steps` timed steps after one untimed step (which compiles ours).

MFU = model FLOPs per step (6N + 12 L H T per token, `training.model_flops_per_token`) / step time
/ peak, where the peak is the best rate of a 4096^3 matmul in the same dtype (`jnp.dot`, bf16 inputs
with fp32 accumulation for bf16) measured at the start of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def matmul_peak_gflops(dtype, n: int, repeats: int = 5) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def ours(config, batch, length, steps: int) -> dict:
    from mmst_jax import training
    from mmst_jax.sharding import make_mesh

    tc = training.TrainConfig(num_steps=1000, batch_size=batch, learning_rate=1e-4, weight_decay=0.1,
                              progress_bar=False)
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    program = training.training_program(config, tc, mesh)
    state = training.init_state(config, program.init_params(jax.random.key(0)), program.optimizer,
                                program.shardings, 0)
    tokens = np.random.default_rng(1).integers(0, config.vocab_size, (batch, length + 1)).astype(np.int32)
    host = {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
            "decoder_loss_weights": np.ones((batch, length), np.int32)}
    data = {k: jax.device_put(v, training.batch_sharding(mesh)) for k, v in host.items()}
    t = time.perf_counter()
    state, metrics = program.step(state, data)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = program.step(state, data)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t)
    return {"step_s": statistics.median(times), "first_step_s": first, "loss": float(metrics["loss"])}


def hf(config, batch, length, steps: int, bf16: bool) -> dict:
    import contextlib

    import torch
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.BloomConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                                         n_layer=config.n_layer, n_head=config.n_head,
                                         hidden_dropout=0.0, attention_dropout=0.0)
    model = transformers.BloomForCausalLM(hf_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, config.vocab_size, (batch, length)))

    def step():
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"step_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--skip_hf", action="store_true", help="time ours only")
    args = parser.parse_args()

    from mmst_jax import training
    from mmst_jax.models.bloom import BloomConfig

    if args.quick:
        config, batch, length, n = BloomConfig(vocab_size=1024, hidden_size=128, n_layer=2, n_head=4), 4, 128, 1024
    else:
        config, batch, length, n = BloomConfig(vocab_size=32000, hidden_size=512, n_layer=8, n_head=8), 8, 512, 4096
    load_before = os.getloadavg()[0]
    peak = {"float32": matmul_peak_gflops(jnp.float32, n), "bfloat16": matmul_peak_gflops(jnp.bfloat16, n)}
    flops = training.model_flops_per_token(config, length) * batch * length
    tokens = batch * length
    results = {}
    for dtype in ("float32", "bfloat16"):
        r = ours(dataclasses.replace(config, dtype=dtype), batch, length, args.steps)
        r["tokens_per_s"] = tokens / r["step_s"]
        r["mfu"] = flops / r["step_s"] / (peak[dtype] * 1e9)
        results[f"ours_{dtype}"] = r
        print(f"ours {dtype}: {r['step_s']:.2f} s/step, {r['tokens_per_s']:.0f} tokens/s, MFU {r['mfu']:.1%} "
              f"of the measured {dtype} peak {peak[dtype]:.1f} GFLOP/s (first step {r['first_step_s']:.1f} s)",
              flush=True)
    if not args.skip_hf:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        for bf16 in (False, True):
            r = hf(config, batch, length, args.steps, bf16)
            r["tokens_per_s"] = tokens / r["step_s"]
            results["hf_bfloat16" if bf16 else "hf_float32"] = r
            print(f"transformers {'bf16 autocast' if bf16 else 'fp32'}: {r['step_s']:.2f} s/step, "
                  f"{r['tokens_per_s']:.0f} tokens/s", flush=True)

    head, base = results["ours_float32"], results.get("hf_float32")
    bf16, hf_bf16 = results["ours_bfloat16"], results.get("hf_bfloat16")
    ratio = lambda a, b: round(a["tokens_per_s"] / b["tokens_per_s"], 2) if b else None  # noqa: E731
    figures = {
        "config": {"hidden": config.hidden_size, "layers": config.n_layer, "heads": config.n_head,
                   "vocab": config.vocab_size, "batch": batch, "length": length},
        # Headline: both sides in fp32 (transformers' default), MFU against the fp32 matmul peak.
        "ours_tokens_per_s": round(head["tokens_per_s"], 1),
        "hf_tokens_per_s": round(base["tokens_per_s"], 1) if base else None,
        "speedup_vs_hf": ratio(head, base),
        "mfu": round(head["mfu"], 3),
        "peak_gflops": round(peak["float32"], 1),
        # bf16 compute (fp32 params and AdamW state) against transformers under bf16 autocast.
        "ours_bf16_tokens_per_s": round(bf16["tokens_per_s"], 1),
        "hf_bf16_autocast_tokens_per_s": round(hf_bf16["tokens_per_s"], 1) if hf_bf16 else None,
        "speedup_bf16_vs_hf_bf16": ratio(bf16, hf_bf16),
        "speedup_bf16_vs_hf_fp32": ratio(bf16, base),
        "mfu_bf16": round(bf16["mfu"], 3),
        "peak_gflops_bf16": round(peak["bfloat16"], 1),
        "model_gflops_per_step": round(flops / 1e9, 1),
        "ours_first_step_s": round(head["first_step_s"], 1),  # compilation included
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
