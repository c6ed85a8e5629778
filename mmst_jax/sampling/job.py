"""The sampling job behind `mmst sample`: a model from settings, its prompts sampled into records.

    sample(prompts_file, output_dir, ...)   # the whole job; returns this host's part file
    build_model(...)                        # a model directory, or a random preset with a
                                            # tokenizer trained on the spot from the prompts
    sample_prompts(prompts, model, sampler) # this host's sample records, queued by few-shot block

Without a model directory the model is a randomly initialised preset and the tokenizer is trained
from the prompts (a smoke test of the whole path, nothing downloaded).

Each host samples its own share of the problems (problem i goes to host i % hosts) and writes
`OUTPUT_DIR/part-{host:05d}-of-{hosts:05d}.jsonl` atomically. Problem i's sample j is drawn with
the key fold_in(fold_in(key(seed), i), j), so the records do not depend on the number of hosts,
the batch size or the mesh. Problems of one (dataset, method) are queued together, so their
few-shot block is prefilled once and shared by every row, and each problem's prompt once for its
samples (`mmst_jax.sampling.sampler`). Every prompt is given after the start token
(`mmst_jax.vocab.start_id`: EOS, else BOS), as every training sequence starts.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from mmst_jax.distributed import host_info
from mmst_jax.models.orbax import Model
from mmst_jax.records import part_name, write_jsonl
from mmst_jax.sampling import decode
from mmst_jax.sampling.prompts import DEFAULT_PROMPTS, read_prompts, read_task
from mmst_jax.sampling.records import STOP, sample_record
from mmst_jax.sampling.sampler import Request, Sampler
from mmst_jax.sampling.stop_strings import StopStrings, token_bytes


def build_model(prompts: Sequence[dict], *, model_dir: str | None, model_preset: str,
                tokenizer: str | None, seed: int, tokenizer_dir: str) -> Model:
    """The model of `model_dir` (orbax or HF; tokenizer default: its own), or a random
    `model_preset` initialised from `seed` (tokenizer default: one trained from the prompts,
    written to TOKENIZER_DIR/tokenizer.json, replacing an earlier run's). The Model's `path` is
    the directory or the preset's name."""
    import jax

    from mmst_jax.models.bloom import BloomConfig, init_params
    from mmst_jax.models.orbax import load_model_dir
    from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

    if model_dir:
        config, params = load_model_dir(model_dir)
        tokenizer = tokenizer or model_dir
    else:
        config = BloomConfig.preset(model_preset)
        params = init_params(config, jax.random.key(seed))
        if tokenizer is None:
            tokenizer = os.path.join(tokenizer_dir, "tokenizer.json")
            texts = [p["prompt"] for p in prompts] * 4
            train_bpe_tokenizer(texts, vocab_size=min(config.vocab_size, 512), path=tokenizer)
    vocab = HFTokenizerVocabulary(tokenizer)
    vocab.check_fits_model(config.vocab_size, f"the model ({model_dir or model_preset})")
    return Model(config, params, vocab, model_dir or model_preset)


def _prompt_record(prompt: dict) -> dict[str, Any]:
    """A prompt record reduced to what a sample record of `mmst sample` holds, with defaults for
    the metadata it lacks (its other fields are not carried)."""
    return {"problem_id": prompt["problem_id"], "dataset": prompt.get("dataset", "prompts"),
            "method": prompt.get("method", "text"), "prompt": prompt["prompt"], "gold": prompt.get("gold")}


def sample_prompts(prompts: Sequence[dict], model: Model, sampler: Sampler, *, num_samples: int,
                   seed: int, round_index: int, stop: StopStrings | None = None) -> list[dict[str, Any]]:
    """This host's sample records (problem i goes to host i % hosts), `num_samples` per prompt,
    in (problem, sample) order. The problems are queued by (dataset, method), so that consecutive
    ones share their few-shot block; completions are cut before a stop string."""
    from tqdm import tqdm

    vocab = model.vocab
    # This host's problems, keeping their global index (it seeds their samples).
    host, hosts = host_info()
    mine = [(i, p) for i, p in enumerate(prompts) if i % hosts == host]
    tokens = vocab.encode_prompts([p["prompt"] for _, p in mine])  # after the start token, as in training
    order = sorted(range(len(mine)), key=lambda n: (str(mine[n][1].get("dataset")), str(mine[n][1].get("method")), n))
    requests = [Request(tokens[n], decode.row_keys(seed, [mine[n][0]] * num_samples, range(num_samples)))
                for n in order]
    records: dict[tuple[int, int], dict[str, Any]] = {}
    with tqdm(total=len(order) * num_samples, desc=f"sampling (host {host})", unit="sample") as bar:
        def on_done(r: int, outs: list[list[int]]) -> None:
            n = order[r]
            for j, out in enumerate(outs):
                text = vocab.decode(out)
                records[n, j] = sample_record(_prompt_record(mine[n][1]), j, stop.truncate(text) if stop else text,
                                              round_index=round_index, seed=seed)
            bar.update(len(outs))

        sampler.generate(requests, on_done=on_done)
    return [records[key] for key in sorted(records)]


def sample(prompts_file: str | None = None, output_dir: str = "runs/sample", *, task: str | None = None,
           split: str = "train", model_preset: str = "tiny", hf_checkpoint: str | None = None,
           tokenizer: str | None = None, num_samples: int = 1, temperature: float = 0.7, top_k: int = 0,
           top_p: float = 0.95, max_new_tokens: int = 48, stop_strings: Sequence[str] = (STOP,),
           batch_size: int = 16, max_cache_length: int | None = None, share_prefix: bool = True,
           mesh_shape: Sequence[int] | None = None, seed: int = 0, round_index: int = 0) -> str:
    """Samples `num_samples` completions per prompt and writes this host's sample records;
    returns the path of the part file.

    The prompts: a prompts JSONL, or a registered SeqIO task's `split`, or DEFAULT_PROMPTS.
    hf_checkpoint: a model directory (HF or orbax); without it a random `model_preset`.
    batch_size: rows (prompt x sample) decoding at once. mesh_shape: (data, fsdp, tensor) over this host's
    devices (default: no mesh, one device).
    """
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
    model = build_model(prompts, model_dir=hf_checkpoint, model_preset=model_preset, tokenizer=tokenizer,
                        seed=seed, tokenizer_dir=output_dir)
    stop = StopStrings(stop_strings, token_bytes(model.vocab)) if stop_strings else None
    mesh = None
    if mesh_shape is not None:
        import jax

        from mmst_jax.sharding import make_mesh

        mesh = make_mesh(mesh_shape, jax.local_devices())
    sampler = Sampler(model.config, model.params, sampling, eos_id=model.vocab.eos_id, pad_id=model.vocab.pad_id,
                      stop=stop, mesh=mesh, max_cache_length=max_cache_length, share_prefix=share_prefix,
                      slots=batch_size)
    records = sample_prompts(prompts, model, sampler, num_samples=num_samples, seed=seed,
                             round_index=round_index, stop=stop)
    path = os.path.join(output_dir, part_name(*host_info()))
    write_jsonl(path, records)
    return path
