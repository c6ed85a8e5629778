"""Sampling speed: ours (KV cache, compiled decode loop) against `transformers` generate, and the
shared few-shot prefix on and off. Prints its figures as one JSON object on its last line.

    python benchmarks/sampling.py            # the issue's sizes (minutes on a 2-core CPU)
    python benchmarks/sampling.py --quick    # small sizes, a smoke run

1. A random BLOOM (hidden 512, 8 layers, 8 heads, vocab 32000), the same weights in both: 16
   prompts of 256 tokens, 128 new tokens, nucleus sampling (temperature 1, top-p 0.9). Neither side
   stops early (ours: no EOS; transformers: min_new_tokens), so both produce 16 x 128 tokens.
   Our compile time is measured apart (ahead-of-time `lower().compile()`) and not counted.
2. 64 rows sharing a 1024-token prefix, each with its own 64-token suffix, 64 new tokens: with the
   prefix prefilled once and shared (`prefix_sharing`) and with every row carrying the whole prompt.
   Peak memory is XLA's buffer assignment for the compiled programs (arguments + outputs +
   temporaries, the parameters included); with sharing it is the larger of the prefix prefill and
   the decode program.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmst_jax.sampling import decode
from mmst_jax.models.hf import load_bloom

PAD = 3


def random_bloom(hidden: int, layers: int, heads: int, vocab: int, seed: int = 0):
    """A transformers BLOOM with random weights, and the same weights loaded as ours."""
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.BloomConfig(vocab_size=vocab, hidden_size=hidden, n_layer=layers, n_head=heads,
                                         unk_token_id=0, bos_token_id=1, eos_token_id=2, pad_token_id=PAD)
    hf_model = transformers.BloomForCausalLM(hf_config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        config, params = load_bloom(tmp)
    return hf_model, config, jax.device_put(params)


def footprint(compiled) -> int:
    """Bytes XLA assigns to a compiled program: arguments, outputs and temporaries."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def timed(fn, repeats: int):
    """(best wall time of `repeats` runs in seconds, the last run's result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, out


def ours_vs_hf(hf_model, config, params, *, rows: int, prompt_len: int, new: int, top_p: float,
               repeats: int) -> dict:
    import torch

    rs = np.random.RandomState(1)
    ids = rs.randint(4, config.vocab_size, size=(rows, prompt_len)).astype(np.int32)
    mask = np.ones_like(ids)
    sampling = decode.SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=new)
    keys = decode.row_keys(0, range(rows), [0] * rows)
    start = time.perf_counter()
    compiled = decode.decode.lower(params, ids, mask, keys, config=config, sampling=sampling, eos_id=None,
                                   pad_id=PAD).compile()
    compile_s = time.perf_counter() - start
    ours_s, (_, lengths, _) = timed(lambda: compiled(params, ids, mask, keys), repeats)
    assert int(np.asarray(lengths).sum()) == rows * new

    prompt = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        hf_model.generate(prompt[:, :8], attention_mask=torch.ones_like(prompt[:, :8]), do_sample=True,
                          max_new_tokens=2, pad_token_id=PAD)  # warm-up
        start = time.perf_counter()
        out = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_p=top_p,
                                top_k=0, temperature=1.0, max_new_tokens=new, min_new_tokens=new,
                                pad_token_id=PAD)
        hf_s = time.perf_counter() - start
    assert out.shape == (rows, prompt_len + new)
    produced = rows * new
    return {"ours_s": round(ours_s, 3), "ours_compile_s": round(compile_s, 2), "hf_s": round(hf_s, 3),
            "ours_tokens_per_s": round(produced / ours_s, 1), "hf_tokens_per_s": round(produced / hf_s, 1),
            "speedup_vs_hf": round(hf_s / ours_s, 2)}


def prefix_sharing(config, params, *, rows: int, prefix_len: int, suffix_len: int, new: int,
                   top_p: float, repeats: int) -> dict:
    rs = np.random.RandomState(2)
    prefix = rs.randint(4, config.vocab_size, size=prefix_len).astype(np.int32)
    suffixes = rs.randint(4, config.vocab_size, size=(rows, suffix_len)).astype(np.int32)
    sampling = decode.SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=new)
    keys = decode.row_keys(0, range(rows), [0] * rows)
    kw = dict(config=config, sampling=sampling, eos_id=None, pad_id=PAD)

    # Off: every row carries the whole prompt.
    whole = np.concatenate([np.tile(prefix, (rows, 1)), suffixes], axis=1)
    whole_mask = np.ones_like(whole)
    off = decode.decode.lower(params, whole, whole_mask, keys, **kw).compile()
    off_s, (a, _, _) = timed(lambda: off(params, whole, whole_mask, keys), repeats)

    # On: the prefix prefilled once (batch 1), its keys/values shared by every row.
    prefix_ids = jnp.asarray(prefix[None])
    prefill = decode.prefill_prefix.lower(params, prefix_ids, config=config).compile()
    prefix_cache = prefill(params, prefix_ids)
    suffix_mask = np.ones_like(suffixes)
    on = decode.decode.lower(params, suffixes, suffix_mask, keys, prefix=prefix_cache, **kw).compile()
    on_s, (b, _, _) = timed(
        lambda: on(params, suffixes, suffix_mask, keys, prefix=prefill(params, prefix_ids)), repeats)
    agree = float(np.mean(np.asarray(a)[:, 0] == np.asarray(b)[:, 0]))  # same first tokens, same keys
    produced = rows * new
    off_bytes, on_bytes = footprint(off), max(footprint(prefill), footprint(on))
    return {"rows": rows, "prefix_tokens": prefix_len, "suffix_tokens": suffix_len, "new_tokens": new,
            "off_s": round(off_s, 3), "on_s": round(on_s, 3),
            "off_tokens_per_s": round(produced / off_s, 1), "on_tokens_per_s": round(produced / on_s, 1),
            "prefix_speedup": round(off_s / on_s, 2),
            "off_peak_mib": round(off_bytes / 2**20, 1), "on_peak_mib": round(on_bytes / 2**20, 1),
            "prefix_memory_ratio": round(off_bytes / on_bytes, 2), "first_tokens_agree": agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the benchmark")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of ours (the best is kept)")
    args = parser.parse_args()
    if args.quick:
        model = dict(hidden=64, layers=2, heads=4, vocab=1024)
        first = dict(rows=4, prompt_len=32, new=16)
        second = dict(rows=8, prefix_len=128, suffix_len=16, new=8)
    else:
        model = dict(hidden=512, layers=8, heads=8, vocab=32000)
        first = dict(rows=16, prompt_len=256, new=128)
        second = dict(rows=64, prefix_len=1024, suffix_len=64, new=64)
    load_before = os.getloadavg()[0]
    hf_model, config, params = random_bloom(**model)
    result = {"model": model, "cpu_count": os.cpu_count(), "top_p": 0.9, "temperature": 1.0,
              **first, **ours_vs_hf(hf_model, config, params, top_p=0.9, repeats=args.repeats, **first)}
    shared = prefix_sharing(config, params, top_p=0.9, repeats=1, **second)  # seconds per run: once
    result.update({"prefix_" + k if not k.startswith("prefix") else k: v for k, v in shared.items()})
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
