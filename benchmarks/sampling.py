"""Sampling speed on this machine: ours against `transformers` generate, the shared few-shot prefix
on and off, continuous batching against static batching, and the decode step against the
machine's limit. Prints its figures as one JSON object on its last line.

    python benchmarks/sampling.py            # the issue's sizes (about 15 minutes on this loaded 2-core CPU)
    python benchmarks/sampling.py --quick    # small sizes, a smoke run

Every figure is the median of `--repeats` timed runs (default 3), the two sides of a comparison
run one after the other in each round; the first, untimed run of each side compiles (its extra
time is reported as compile_s). The load average is printed before and after.

1. hf: a random BLOOM (hidden 512, 8 layers, 8 heads, vocab 32000), the same weights in both: 16
   prompts of 256 tokens, 128 new tokens, nucleus sampling (temperature 1, top-p 0.9). Neither side
   stops early (ours: no EOS; transformers: min_new_tokens), so both produce 16 x 128 tokens.
2. roofline: the same case's decode step ((time for 128 new tokens - time for 1) / 127) against the
   machine's limit for it: the larger of (weights + the rows' average KV cache) read once at the
   measured memory bandwidth and the step's FLOPs at the measured matmul peak, both measured here.
3. prefix: 64 rows sharing a 1024-token prefix, each with its own 64-token suffix, 64 new tokens:
   the prefix prefilled once and shared, against every row carrying the whole prompt.
4. continuous: an MMST-like workload — 256 GSM8K test problems x 4 samples after a shared 512-token
   few-shot block (the start token, then GSM8K train worked examples), problem prompts of 40-120 tokens, stop strings
   "\\n\\n" and "Question:", greedy, each row's length limit drawn from the token lengths of GSM8K's
   worked answers (train) — on a smaller random BLOOM (hidden 256, 4 layers, the tokenizer's 8192
   tokens), 64 rows decoding at once. Continuous batching (slots refilled as rows stop, each
   problem prefilled once for its 4 samples) against static batching (batches of 64 rows in queue
   order, each run until its longest row stops, each row prefilled on its own, the few-shot
   block shared: today's policy), the static side running on the same compiled decode step so
   the figure is the scheduling's alone. Useful tokens: the rows' own tokens (no padding, no
   finished rows); both sides must return the same tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmst_jax.models.hf import load_bloom
from mmst_jax.sampling import decode
from mmst_jax.sampling.sampler import Request, Sampler

PAD = 3
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "gsm8k")


def random_bloom(hidden: int, layers: int, heads: int, vocab: int, seed: int = 0, hf: bool = True):
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
    return (hf_model if hf else None), config, jax.device_put(params)


def interleaved(sides: dict, repeats: int, warm: dict | None = None) -> dict:
    """{side: (median seconds, compile seconds, last result)}: a warm-up run of every side (the
    side itself, or its `warm` function: a smaller run of the same compiled shapes), then
    `repeats` rounds running each side once."""
    times, first, out = {k: [] for k in sides}, {}, {}
    for name, fn in sides.items():
        start = time.perf_counter()
        out[name] = (warm or {}).get(name, fn)()
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {k: (statistics.median(times[k]), max(first[k] - statistics.median(times[k]), 0.0), out[k])
            for k in sides}


def machine_limits(repeats: int) -> dict:
    """Memory read bandwidth (a sum over 256 MiB) and fp32 matmul peak (2048^3), medians."""
    x = jnp.ones((64 * 2**20,), jnp.float32)
    a = jnp.ones((2048, 2048), jnp.float32)
    total, matmul = jax.jit(jnp.sum), jax.jit(jnp.matmul)
    r = interleaved({"read": lambda: jax.block_until_ready(total(x)),
                     "matmul": lambda: jax.block_until_ready(matmul(a, a))}, max(repeats, 5))
    return {"bandwidth_gb_s": round(x.nbytes / r["read"][0] / 1e9, 1),
            "matmul_gflop_s": round(2 * 2048**3 / r["matmul"][0] / 1e9, 1)}


def ours_vs_hf(hf_model, config, params, *, rows: int, prompt_len: int, new: int, top_p: float,
               repeats: int, limits: dict) -> dict:
    import torch

    rs = np.random.RandomState(1)
    ids = rs.randint(4, config.vocab_size, size=(rows, prompt_len)).astype(np.int32)
    prompts, keys = ids.tolist(), decode.row_keys(0, range(rows), [0] * rows)
    sampling = decode.SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=new)
    ours = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, share_prefix=False, slots=rows)
    one = Sampler(config, params, dataclasses.replace(sampling, max_new_tokens=1), eos_id=None, pad_id=PAD,
                  share_prefix=False, slots=rows)
    prompt = torch.tensor(ids, dtype=torch.long)

    def hf():
        with torch.no_grad():
            return hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_p=top_p,
                                     top_k=0, temperature=1.0, max_new_tokens=new, min_new_tokens=new,
                                     pad_token_id=PAD)

    r = interleaved({"ours": lambda: ours(prompts, keys), "hf": hf, "ours_1": lambda: one(prompts, keys)}, repeats)
    assert all(len(row) == new for row in r["ours"][2]) and r["hf"][2].shape == (rows, prompt_len + new)
    produced = rows * new
    step_s = (r["ours"][0] - r["ours_1"][0]) / (new - 1)
    # The limit: weights + the rows' average cache read once a step, or the step's FLOPs.
    context = prompt_len + new / 2
    cache_bytes = rows * config.n_layer * 2 * context * config.hidden_size * 4
    weight_bytes = config.num_params() * 4
    flops = 2 * config.num_params() * rows + 4 * rows * config.n_layer * context * config.hidden_size
    limit_s = max((weight_bytes + cache_bytes) / (limits["bandwidth_gb_s"] * 1e9),
                  flops / (limits["matmul_gflop_s"] * 1e9))
    return {"ours_s": round(r["ours"][0], 3), "ours_compile_s": round(r["ours"][1], 2), "hf_s": round(r["hf"][0], 3),
            "ours_tokens_per_s": round(produced / r["ours"][0], 1), "hf_tokens_per_s": round(produced / r["hf"][0], 1),
            "speedup_vs_hf": round(r["hf"][0] / r["ours"][0], 2),
            "step_ms": round(step_s * 1e3, 2), "limit_step_ms": round(limit_s * 1e3, 2),
            "limit_bound": "memory" if limit_s * limits["bandwidth_gb_s"] * 1e9 <= weight_bytes + cache_bytes + 1
            else "compute", "roofline_fraction": round(limit_s / step_s, 3)}


def prefix_sharing(config, params, *, rows: int, prefix_len: int, suffix_len: int, new: int, top_p: float,
                   repeats: int) -> dict:
    rs = np.random.RandomState(2)
    prefix = rs.randint(4, config.vocab_size, size=prefix_len).tolist()
    prompts = [prefix + rs.randint(4, config.vocab_size, size=suffix_len).tolist() for _ in range(rows)]
    sampling = decode.SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=new)
    keys = decode.row_keys(0, range(rows), [0] * rows)

    def run(share: bool, n: int = rows):  # a new Sampler each run: the prefix is prefilled inside the timing
        sampler = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, share_prefix=share, slots=rows,
                          length_bucket=suffix_len)
        return sampler(prompts[:n], keys[:n]), sampler.shared_tokens

    r = interleaved({"off": lambda: run(False), "on": lambda: run(True)}, repeats,
                    warm={"off": lambda: run(False, rows // 8)})  # one prefill call: the same programs
    assert r["on"][2][1] == prefix_len and r["off"][2][1] == 0
    agree = float(np.mean([a[0] == b[0] for a, b in zip(r["off"][2][0], r["on"][2][0])]))
    produced = rows * new
    columns_off, columns_on = rows * (prefix_len + suffix_len + new), prefix_len + rows * (suffix_len + new)
    return {"rows": rows, "prefix_tokens": prefix_len, "suffix_tokens": suffix_len, "new_tokens": new,
            "off_s": round(r["off"][0], 3), "on_s": round(r["on"][0], 3),
            "off_tokens_per_s": round(produced / r["off"][0], 1), "on_tokens_per_s": round(produced / r["on"][0], 1),
            "prefix_speedup": round(r["off"][0] / r["on"][0], 2),
            "kv_cache_ratio": round(columns_off / columns_on, 2), "first_tokens_agree": agree}


def gsm8k_workload(problems: int, samples: int, few_shot: int, vocab_size: int, max_new: int):
    """(tokenizer, few-shot tokens, problem prompts, per-row limits [problem][sample])."""
    from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

    def read(name):
        with open(os.path.join(DATA, name)) as f:
            return [json.loads(line) for line in f]

    train, test = read("train.jsonl"), read("test.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        train_bpe_tokenizer([x["question"] + "\n" + x["answer"] for x in train[:4000]], vocab_size=vocab_size,
                            path=path)
        vocab = HFTokenizerVocabulary(path)
    shots = "".join(f"Question: {x['question']}\nAnswer: {x['answer']}\n\n" for x in train[:12])
    block = [vocab.start_id] + vocab.encode(shots)[:few_shot - 1]  # every sampled prompt starts with it
    lengths = np.asarray([len(t) + 1 for t in vocab.encode_batch([x["answer"] for x in train])])  # + the stop
    rs = np.random.RandomState(0)
    questions = vocab.encode_batch([f"Question: {x['question']}\nAnswer:" for x in test])
    fit = [q for q in questions if 40 <= len(q) <= 120][:problems]
    assert len(fit) == problems, len(fit)
    limits = np.minimum(rs.choice(lengths, size=(problems, samples)), max_new)
    return vocab, block, fit, limits, lengths


def continuous_batching(*, problems: int, samples: int, few_shot: int, slots: int, max_new: int, model: dict,
                        repeats: int) -> dict:
    vocab, block, questions, limits, lengths = gsm8k_workload(problems, samples, few_shot, model["vocab"], max_new)
    _, config, params = random_bloom(**model, hf=False)
    stop = decode.StopStrings(["\n\n", "Question:"], decode.token_bytes(vocab))
    sampling = decode.SamplingConfig(max_new_tokens=max_new)  # greedy
    prompts = [block + q for q in questions]
    keys = [decode.row_keys(0, [i] * samples, range(samples)) for i in range(problems)]

    def sampler():
        return Sampler(config, params, sampling, eos_id=vocab.eos_id, pad_id=vocab.pad_id, stop=stop, slots=slots,
                       length_bucket=128)  # every batch of either side: one prompt width

    def continuous(chosen=range(problems)):
        s = sampler()
        out = s.generate([Request(prompts[i], keys[i], [int(n) for n in limits[i]]) for i in chosen])
        return out, s.steps

    def static(batches=None):  # batches of `slots` rows, each row its own request: no refill, no per-problem prefill
        s, rows = sampler(), [(i, j) for i in range(problems) for j in range(samples)][:batches]
        out, steps = [[None] * samples for _ in range(problems)], 0
        for start in range(0, len(rows), slots):
            batch = rows[start:start + slots]
            got = s.generate([Request(prompts[i], keys[i][j:j + 1], [int(limits[i][j])]) for i, j in batch])
            for (i, j), (tokens,) in zip(batch, got):
                out[i][j] = tokens
            steps += s.steps
        return out, steps

    longest = max(range(problems), key=lambda i: len(questions[i]))  # warm-ups of the same compiled shapes
    warm = {"static": lambda: static(slots), "continuous": lambda: continuous(sorted({longest, *range(slots // 4)}))}
    r = interleaved({"static": static, "continuous": continuous}, repeats, warm=warm)
    (a, static_steps), (b, continuous_steps) = r["static"][2], r["continuous"][2]
    assert a == b, "continuous and static batching returned different tokens"
    useful = sum(len(t) for p in b for t in p)
    return {"problems": problems, "samples": samples, "few_shot_tokens": len(block), "slots": slots,
            "prompt_tokens": [min(map(len, questions)), max(map(len, questions))],
            "gsm8k_answer_tokens": {"mean": round(float(lengths.mean()), 1), "p50": int(np.median(lengths)),
                                    "p99": int(np.percentile(lengths, 99)), "max": int(lengths.max())},
            "max_new_tokens": max_new, "useful_tokens": useful,
            "stopped_by_stop_string": int(sum(len(t) < n for p, lim in zip(b, limits) for t, n in zip(p, lim))),
            "static_s": round(r["static"][0], 3), "continuous_s": round(r["continuous"][0], 3),
            "static_steps": static_steps, "continuous_steps": continuous_steps,
            "static_useful_tokens_per_s": round(useful / r["static"][0], 1),
            "continuous_useful_tokens_per_s": round(useful / r["continuous"][0], 1),
            "continuous_speedup": round(r["static"][0] / r["continuous"][0], 2), "same_outputs": a == b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (the median is kept)")
    args = parser.parse_args()
    if args.quick:
        model = dict(hidden=64, layers=2, heads=4, vocab=1024)
        first = dict(rows=4, prompt_len=32, new=16)
        second = dict(rows=8, prefix_len=128, suffix_len=16, new=8)
        third = dict(problems=16, samples=4, few_shot=128, slots=16, max_new=64,
                     model=dict(hidden=64, layers=2, heads=4, vocab=1024))
    else:
        model = dict(hidden=512, layers=8, heads=8, vocab=32000)
        first = dict(rows=16, prompt_len=256, new=128)
        second = dict(rows=64, prefix_len=1024, suffix_len=64, new=64)
        third = dict(problems=256, samples=4, few_shot=512, slots=64, max_new=320,
                     model=dict(hidden=256, layers=4, heads=4, vocab=8192))
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    limits = machine_limits(args.repeats)
    hf_model, config, params = random_bloom(**model)
    result = {"model": model, "cpu_count": os.cpu_count(), "repeats": args.repeats, "top_p": 0.9,
              "temperature": 1.0, **limits, **first,
              **ours_vs_hf(hf_model, config, params, top_p=0.9, repeats=args.repeats, limits=limits, **first)}
    print(json.dumps(result), flush=True)
    shared = prefix_sharing(config, params, top_p=0.9, repeats=args.repeats, **second)
    result.update({"prefix_" + k if not k.startswith("prefix") else k: v for k, v in shared.items()})
    print(json.dumps(shared), flush=True)
    batching = continuous_batching(repeats=args.repeats, **third)
    result.update({"continuous_" + k if not k.startswith("continuous") else k: v for k, v in batching.items()})
    load_after = os.getloadavg()
    print(f"load average after: {load_after}", flush=True)
    result["load_avg"] = {"before_1_5_15m": [round(x, 2) for x in load_before],
                          "after_1_5_15m": [round(x, 2) for x in load_after]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
