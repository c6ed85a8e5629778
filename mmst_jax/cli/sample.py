"""`mmst sample`: sample completions for prompts and write sample records (DESIGN.md).

    mmst sample                                   # built-in default: tiny random BLOOM, built-in prompts
    mmst sample --prompts prompts.jsonl --output_dir runs/s --gin.sample.hf_checkpoint="'ckpt/'"
    mmst sample --task gsm8k_text --split train   # a SeqIO task (`import tasks` registers them)

A prompts file holds one JSON object a line with `prompt` and optionally `problem_id`, `dataset`,
`method`, `gold`. A SeqIO task's examples give `inputs` (the prompt) and the same metadata. Without
`hf_checkpoint` the model is a randomly initialised preset and the tokenizer is trained on the spot
from the prompts (a smoke test of the whole path, nothing downloaded).

Each host samples its own share of the problems (problem i goes to host i % hosts) and writes
`OUTPUT_DIR/part-{host:05d}-of-{hosts:05d}.jsonl` atomically. Problem i's sample j is drawn with
the key fold_in(fold_in(key(seed), i), j), so the records do not depend on the number of hosts,
the batch size or the mesh. Problems of one (dataset, method) are batched together, so their
few-shot block is prefilled once per batch and shared by every row.
"""

from __future__ import annotations

import argparse
import itertools
import os
from typing import Any, Sequence

import gin

from mmst_jax.records import read_jsonl, write_jsonl

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
METADATA = ("problem_id", "dataset", "method", "gold")


def _check_prompt(record: dict) -> None:
    if not isinstance(record.get("prompt"), str):
        raise ValueError("each line must be an object with a string 'prompt'")


def read_prompts(path: str) -> list[dict[str, Any]]:
    """Reads a prompts JSONL; every line must be an object with a string `prompt`."""
    records = read_jsonl(path, _check_prompt)
    if not records:
        raise ValueError(f"{path} holds no prompts")
    for n, record in enumerate(records, 1):
        record.setdefault("problem_id", f"{os.path.basename(path)}-{n}")
    return records


def read_task(name: str, split: str) -> list[dict[str, Any]]:
    """The examples of a SeqIO task or mixture as prompt records (`inputs` is the prompt)."""
    import seqio

    try:
        import tasks  # noqa: F401  (registers the project's tasks)
    except ImportError:
        pass
    try:
        source = seqio.get_mixture_or_task(name)
    except ValueError as e:
        raise ValueError(f"no SeqIO task or mixture named {name!r}: {e}") from e
    dataset = source.get_dataset(sequence_length=None, split=split, shuffle=False)
    vocab = source.output_features["inputs"].vocabulary
    records = []
    for i, ex in enumerate(dataset.as_numpy_iterator()):
        text = ex.get("inputs_pretokenized")
        prompt = text.decode("utf-8") if text is not None else vocab.decode(ex["inputs"].tolist())
        record = {"prompt": prompt, "problem_id": f"{name}-{i}", "dataset": name, "method": "text"}
        for key in METADATA:
            if key in ex:
                value = ex[key]
                record[key] = value.decode("utf-8") if isinstance(value, bytes) else value
        records.append(record)
    if not records:
        raise ValueError(f"SeqIO task {name!r} has no examples in split {split!r}")
    return records


@gin.configurable(denylist=["prompts_file", "output_dir", "task", "split"])
def sample(prompts_file: str | None = None, output_dir: str = "runs/sample", *, task: str | None = None,
           split: str = "train", model_preset: str = "tiny", hf_checkpoint: str | None = None,
           tokenizer: str | None = None, num_samples: int = 1, temperature: float = 0.7, top_k: int = 0,
           top_p: float = 0.95, max_new_tokens: int = 48, stop_strings: Sequence[str] = ("\n\n",),
           batch_size: int = 16, max_cache_length: int | None = None, share_prefix: bool = True,
           mesh_shape: Sequence[int] | None = None, seed: int = 0, round_index: int = 0) -> str:
    """Samples `num_samples` completions per prompt; returns the path of the written records.

    batch_size counts rows (prompt x sample). mesh_shape: (data, fsdp, tensor) over this host's
    devices (default: no mesh, one device).
    """
    import jax
    from tqdm import tqdm

    from mmst_jax.sampling import decode
    from mmst_jax.models.bloom import BloomConfig, init_params
    from mmst_jax.models.hf import load_bloom
    from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prompts_file and task:
        raise ValueError("give either a prompts file or a SeqIO task, not both")
    if task:
        prompts = read_task(task, split)
    else:
        prompts = read_prompts(prompts_file) if prompts_file else [dict(p) for p in DEFAULT_PROMPTS]
    sampling = decode.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                       max_new_tokens=max_new_tokens)
    if hf_checkpoint:
        config, params = load_bloom(hf_checkpoint)
        tokenizer = tokenizer or hf_checkpoint
    else:
        config = BloomConfig.preset(model_preset)
        params = init_params(config, jax.random.key(seed))
        if tokenizer is None:
            tokenizer = os.path.join(output_dir, "tokenizer.json")  # replaces an earlier run's
            texts = [p["prompt"] for p in prompts] * 4
            train_bpe_tokenizer(texts, vocab_size=min(config.vocab_size, 512), path=tokenizer)
    vocab = HFTokenizerVocabulary(tokenizer)
    vocab.check_fits_model(config.vocab_size, f"the model ({hf_checkpoint or model_preset})")
    stop = decode.StopStrings(stop_strings, decode.token_bytes(vocab)) if stop_strings else None
    mesh = None
    if mesh_shape is not None:
        from mmst_jax.sharding import make_mesh

        mesh = make_mesh(mesh_shape, jax.local_devices())
    sampler = decode.Sampler(config, params, sampling, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                               stop=stop, mesh=mesh, max_cache_length=max_cache_length,
                               share_prefix=share_prefix)

    # This host's problems, keeping their global index (it seeds their samples).
    host, hosts = jax.process_index(), jax.process_count()
    mine = [(i, p) for i, p in enumerate(prompts) if i % hosts == host]
    tokens = vocab.encode_batch([p["prompt"] for _, p in mine])
    # Rows (problem, sample), grouped by (dataset, method) so that batches share few-shot blocks.
    rows = [(n, j) for n in sorted(range(len(mine)), key=lambda n: (str(mine[n][1].get("dataset")),
                                                                     str(mine[n][1].get("method")), n))
            for j in range(num_samples)]
    groups = itertools.groupby(rows, key=lambda r: (mine[r[0]][1].get("dataset"), mine[r[0]][1].get("method")))
    records: dict[tuple[int, int], dict[str, Any]] = {}
    with tqdm(total=len(rows), desc=f"sampling (host {host})", unit="sample") as bar:
        for _, group in groups:
            group = list(group)
            for start in range(0, len(group), batch_size):
                batch = group[start:start + batch_size]
                keys = decode.row_keys(seed, [mine[n][0] for n, _ in batch], [j for _, j in batch])
                outputs = sampler([tokens[n] for n, _ in batch], keys)
                for (n, j), out in zip(batch, outputs):
                    text = vocab.decode(out)
                    prompt = mine[n][1]
                    records[n, j] = {
                        "problem_id": prompt["problem_id"], "dataset": prompt.get("dataset", "prompts"),
                        "method": prompt.get("method", "text"), "sample_index": j, "round": round_index,
                        "prompt": prompt["prompt"], "completion": stop.truncate(text) if stop else text,
                        "gold": prompt.get("gold"), "seed": seed,
                    }
                bar.update(len(batch))
    path = os.path.join(output_dir, f"part-{host:05d}-of-{hosts:05d}.jsonl")
    write_jsonl(path, [records[key] for key in sorted(records)])
    return path


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst sample", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", help="JSONL of prompts (default: the built-in prompts)")
    parser.add_argument("--task", help="a SeqIO task or mixture to take the prompts from")
    parser.add_argument("--split", default="train", help="the SeqIO task's split (default: train)")
    parser.add_argument("--output_dir", default="runs/sample", help="where the sample records go")
    args = parser.parse_args(argv)
    path = sample(args.prompts, args.output_dir, task=args.task, split=args.split)
    with open(path) as f:
        count = sum(1 for _ in f)
    print(f"wrote {count} sample records to {path}")
    return 0
