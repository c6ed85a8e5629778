"""`mmst sample`: sample completions for prompts and write sample records (DESIGN.md).

    mmst sample                                   # built-in default: tiny random BLOOM, built-in prompts
    mmst sample --prompts prompts.jsonl --output_dir runs/s --gin.sample.hf_checkpoint="'ckpt/'"

A prompts file holds one JSON object a line with `prompt` and optionally `problem_id`, `dataset`,
`method`, `gold`. Without `hf_checkpoint` the model is a randomly initialised preset and the
tokenizer is trained on the spot from the prompts (a smoke test of the whole path, nothing
downloaded). Records go to `OUTPUT_DIR/part-{host:05d}-of-{hosts:05d}.jsonl`, written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import gin

DEFAULT_PROMPTS = (
    {"problem_id": "default-0", "dataset": "builtin", "method": "text",
     "prompt": "Q: Ann has 3 apples and buys 4 more. How many apples does she have?\nA:", "gold": "7"},
    {"problem_id": "default-0", "dataset": "builtin", "method": "code",
     "prompt": "# Ann has 3 apples and buys 4 more. How many apples does she have?\ndef solution():\n",
     "gold": "7"},
    {"problem_id": "default-1", "dataset": "builtin", "method": "text",
     "prompt": "Q: A box holds 12 eggs. How many eggs are in 5 boxes?\nA:", "gold": "60"},
    {"problem_id": "default-1", "dataset": "builtin", "method": "code",
     "prompt": "# A box holds 12 eggs. How many eggs are in 5 boxes?\ndef solution():\n", "gold": "60"},
)


def read_prompts(path: str) -> list[dict[str, Any]]:
    """Reads a prompts JSONL; every line must be an object with a string `prompt`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"prompts file {path} does not exist")
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise ValueError(f"{path}:{line_no}: each line must be an object with a string 'prompt'")
            record.setdefault("problem_id", f"{os.path.basename(path)}-{line_no}")
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no prompts")
    return records


def write_jsonl_atomic(path: str, records: Sequence[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@gin.configurable(denylist=["prompts_file", "output_dir"])
def sample(prompts_file: str | None = None, output_dir: str = "runs/sample", *,
           model_preset: str = "tiny", hf_checkpoint: str | None = None, tokenizer: str | None = None,
           num_samples: int = 1, temperature: float = 0.7, top_k: int = 0, top_p: float = 0.95,
           max_new_tokens: int = 48, batch_size: int = 16, seed: int = 0, round_index: int = 0) -> str:
    """Samples `num_samples` completions per prompt; returns the path of the written records."""
    import jax
    import numpy as np
    from tqdm import tqdm

    from mmst_jax import decoding
    from mmst_jax.models.bloom import BloomConfig, init_params
    from mmst_jax.models.hf import load_bloom
    from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    prompts = read_prompts(prompts_file) if prompts_file else [dict(p) for p in DEFAULT_PROMPTS]
    sampling = decoding.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                       max_new_tokens=max_new_tokens)
    if hf_checkpoint:
        config, params = load_bloom(hf_checkpoint)
        tokenizer = tokenizer or hf_checkpoint
    else:
        config = BloomConfig.preset(model_preset)
        params = init_params(config, jax.random.key(seed))
        if tokenizer is None:
            tokenizer = os.path.join(output_dir, "tokenizer.json")
            texts = [p["prompt"] for p in prompts] * 4
            train_bpe_tokenizer(texts, vocab_size=min(config.vocab_size, 512), path=tokenizer)
    vocab = HFTokenizerVocabulary(tokenizer)
    vocab.check_fits_model(config.vocab_size, f"the model ({hf_checkpoint or model_preset})")

    rows = [(p, i) for p in prompts for i in range(num_samples)]
    records = []
    rng = jax.random.key(seed)
    for start in tqdm(range(0, len(rows), batch_size), desc="sampling", unit="batch"):
        chunk = rows[start:start + batch_size]
        ids, mask = decoding.left_pad(vocab.encode_batch([p["prompt"] for p, _ in chunk]), vocab.pad_id)
        rng, key = jax.random.split(rng)
        tokens = decoding.generate(params, ids, mask, key, config=config, sampling=sampling,
                                   eos_id=vocab.eos_id, pad_id=vocab.pad_id)
        for (prompt, index), completion in zip(chunk, decoding.trim(np.asarray(tokens), vocab.eos_id)):
            records.append({
                "problem_id": prompt["problem_id"], "dataset": prompt.get("dataset", "prompts"),
                "method": prompt.get("method", "text"), "sample_index": index, "round": round_index,
                "prompt": prompt["prompt"], "completion": vocab.decode(completion),
                "gold": prompt.get("gold"), "seed": seed,
            })
    host, hosts = jax.process_index(), jax.process_count()
    path = os.path.join(output_dir, f"part-{host:05d}-of-{hosts:05d}.jsonl")
    write_jsonl_atomic(path, records)
    return path


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst sample", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", help="JSONL of prompts (default: the built-in prompts)")
    parser.add_argument("--output_dir", default="runs/sample", help="where the sample records go")
    args = parser.parse_args(argv)
    path = sample(args.prompts, args.output_dir)
    with open(path) as f:
        count = sum(1 for _ in f)
    print(f"wrote {count} sample records to {path}")
    return 0
