"""Sample records: prompt records sampled into resumable, sharded part files.

`sample_record(...)` is the one builder of a sample record (docs/architecture.md) from a prompt record.
`generate_records(...)` samples every prompt record of this host's shard (record i goes to host
i % hosts) and writes `OUT_DIR/part-{host:05d}-of-{hosts:05d}.jsonl`. The model is given each
prompt's token ids after the start token (`mmst_jax.vocab.start_id`: EOS, else BOS), as every
training sequence starts; completions hold only the new tokens. Row (i, j) — prompt i of the
whole list, sample j — is drawn with its own key `row_keys(seed, i, j)`, so the records depend
neither on the number of hosts nor on batching. Rows are sampled in fixed chunks, all of them in one
continuous-batching run (`mmst_jax.sampling.sampler`), each chunk written atomically to a hidden
chunk file as soon as its last row stops; a run killed in the middle reuses the finished
chunks and redoes the others exactly as they would have been done, then joins them.

On a mesh spanning several hosts (a model too big for one) sampling is one computation of all the
hosts: every host makes the same calls over every host's rows, in step, and keeps its own shard's
records; a chunk is redone unless every host has it. With a mesh of its own devices (or none) a
host samples only its own rows.
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable, Sequence

from etils import epath

from mmst_jax import faults
from mmst_jax.distributed import host_info, on_every_host
from mmst_jax.models.orbax import Model
from mmst_jax.records import SAMPLE_FIELDS, part_name, read_jsonl, remove, write_jsonl

STOP = "\n\n"  # a completion ends at the first blank line


def generate_records(prompts: Sequence[dict], out_dir: epath.PathLike, model: Model, *, temperature: float,
                     num_samples: int, seed: int, round_index: int, max_new_tokens: int, top_k: int = 0,
                     top_p: float = 1.0, batch_size: int = 64, chunk_rows: int = 512, length_bucket: int = 32,
                     mesh=None, rules=None, progress: bool = True, desc: str = "sampling") -> epath.Path:
    """Samples `num_samples` completions of each prompt record of this host's shard and writes
    sample records (docs/architecture.md, plus any extra fields of the prompt record); returns the part file.
    A part file already there (written atomically by an earlier run) is kept as it is. batch_size:
    rows decoding at once (the sampler's slots). On a mesh spanning several hosts every host must
    call this at once, with the same arguments."""
    from mmst_jax.sampling import decode
    from mmst_jax.sharding import spans_processes

    host, hosts = host_info()
    out_dir = epath.Path(out_dir)
    part = out_dir / part_name(host, hosts)
    in_step = hosts > 1 and mesh is not None and spans_processes(mesh)
    if part.exists() and not in_step:
        return part
    chunks_dir = out_dir / f".{part.name}.chunks"
    run = [i for i in range(len(prompts)) if in_step or i % hosts == host]
    rows = [(i, j) for i in run for j in range(max(1, num_samples))]
    chunks = [rows[s:s + chunk_rows] for s in range(0, len(rows), chunk_rows)]
    done = [part.exists() or (chunks_dir / f"chunk-{c:05d}.jsonl").exists() for c in range(len(chunks))]
    if in_step:  # all run a chunk that any host lacks (a host killed before it wrote its share)
        done = on_every_host(done)
    todo = [c for c in range(len(chunks)) if not done[c]]
    done_rows = sum(len(chunks[c]) for c in range(len(chunks)) if c not in todo)
    if todo:
        _sample_chunks(prompts, chunks, todo, model, chunks_dir=chunks_dir, part=part, host=host, hosts=hosts,
                       sampling=decode.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                                      max_new_tokens=max_new_tokens),
                       seed=seed, round_index=round_index, slots=batch_size, length_bucket=length_bucket,
                       mesh=mesh, rules=rules, progress=progress, desc=desc, initial=done_rows, total=len(rows))
    if part.exists():
        return part
    records = []
    for c in range(len(chunks)):
        records += read_jsonl(chunks_dir / f"chunk-{c:05d}.jsonl")
    write_jsonl(part, records)
    remove(chunks_dir)
    return part


def _sample_chunks(prompts: Sequence[dict], chunks: list[list[tuple[int, int]]], todo: list[int], model: Model, *,
                   chunks_dir: epath.Path, part: epath.Path, host: int, hosts: int, sampling, seed: int,
                   round_index: int, slots: int, length_bucket: int, mesh, rules, progress: bool, desc: str,
                   initial: int, total: int) -> None:
    """Samples the rows of chunks `todo` in one continuous-batching run (a request per prompt and
    chunk: the prompt's rows in that chunk) and writes each chunk's file of this host's records as
    soon as its last row has stopped."""
    from tqdm import tqdm

    from mmst_jax.sampling import decode
    from mmst_jax.sampling.sampler import Request, Sampler

    vocab = model.vocab
    stop = decode.StopStrings([STOP], decode.token_bytes(vocab))
    sampler = Sampler(model.config, model.params, sampling, eos_id=vocab.eos_id, pad_id=vocab.pad_id, stop=stop,
                      mesh=mesh, rules=rules, length_bucket=length_bucket, slots=slots)
    need = sorted({i for c in todo for i, _ in chunks[c]})
    # Each prompt after the start token, as the model reads every sequence in training (vocab.start_id).
    tokens = dict(zip(need, vocab.encode_prompts([prompts[i]["prompt"] for i in need])))
    requests, owner = [], []  # owner[r]: (chunk, prompt, sample indices) of request r
    for c in todo:
        for i, group in itertools.groupby(chunks[c], key=lambda row: row[0]):
            samples = [j for _, j in group]
            requests.append(Request(tokens[i], decode.row_keys(seed, [i] * len(samples), samples)))
            owner.append((c, i, samples))
    left = collections.Counter(c for c, _, _ in owner)
    finished: dict[int, dict[int, list[list[int]]]] = collections.defaultdict(dict)
    with tqdm(total=total, initial=initial, desc=desc, unit="sample", disable=not progress, leave=False) as bar:
        def on_done(r: int, outs: list[list[int]]) -> None:
            c, _, samples = owner[r]
            finished[c][r] = outs
            bar.update(len(samples))
            left[c] -= 1
            if left[c]:
                return
            records = []
            for q, outs in sorted(finished.pop(c).items()):
                _, i, samples = owner[q]
                if i % hosts == host:
                    records += [sample_record(prompts[i], j, stop.truncate(vocab.decode(t)), round_index=round_index,
                                              seed=seed) for j, t in zip(samples, outs)]
            faults.point("sample.batch")
            if not part.exists():
                write_jsonl(chunks_dir / f"chunk-{c:05d}.jsonl", records)

        sampler.generate(requests, on_done=on_done)


def sample_record(prompt: dict, sample_index: int, completion: str, *, round_index: int, seed: int) -> dict:
    """The sample record of one completion of a prompt record: the prompt record's extra fields,
    then SAMPLE_FIELDS (the prompt record must hold problem_id, dataset, method, prompt, gold)."""
    record = {k: v for k, v in prompt.items() if k not in SAMPLE_FIELDS}
    record.update(problem_id=prompt["problem_id"], dataset=prompt["dataset"], method=prompt["method"],
                  sample_index=sample_index, round=round_index, prompt=prompt["prompt"],
                  completion=completion, gold=prompt["gold"], seed=seed)
    return record


def token_counter(model_or_vocab) -> Callable[[str], int]:
    """text -> its number of tokens, with a model's vocabulary (or a vocabulary)."""
    vocab = getattr(model_or_vocab, "vocab", model_or_vocab)
    return lambda text: len(vocab.encode(text))
