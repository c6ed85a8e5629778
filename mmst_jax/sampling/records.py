"""Sample records: prompt records sampled into resumable, sharded part files.

`sample_record(...)` is the one builder of a sample record (docs/architecture.md) from a prompt record.
`generate_records(...)` samples every prompt record of this host's shard (record i goes to host
i % hosts) and writes `OUT_DIR/part-{host:05d}-of-{hosts:05d}.jsonl`. Row (i, j) — prompt i of the
whole list, sample j — is drawn with its own key `row_keys(seed, i, j)`, so the records depend
neither on the number of hosts nor on batching. Rows are sampled in fixed chunks, each written
atomically to a hidden chunk file as it finishes; a run killed in the middle reuses the finished
chunks and redoes the others exactly as they would have been done, then joins them.

On a mesh spanning several hosts (a model too big for one) sampling is one computation of all the
hosts: every host runs the same batches of every host's rows, in step, and keeps its own shard's
records; a chunk is redone unless every host has it. With a mesh of its own devices (or none) a
host samples only its own rows.
"""

from __future__ import annotations

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
    A part file already there (written atomically by an earlier run) is kept as it is. On a mesh
    spanning several hosts every host must call this at once, with the same arguments."""
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
        from tqdm import tqdm

        sampling = decode.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                         max_new_tokens=max_new_tokens)
        vocab = model.vocab
        stop = decode.StopStrings([STOP], decode.token_bytes(vocab))
        sampler = decode.Sampler(model.config, model.params, sampling, eos_id=vocab.eos_id,
                                 pad_id=vocab.pad_id, stop=stop, mesh=mesh, rules=rules,
                                 length_bucket=length_bucket)
        tokens: dict[int, list[int]] = {}
        with tqdm(total=len(rows), initial=done_rows, desc=desc, unit="sample", disable=not progress,
                  leave=False) as bar:
            for c in todo:
                chunk = chunks[c]
                need = [i for i in dict.fromkeys(i for i, _ in chunk) if i not in tokens]
                for i, t in zip(need, vocab.encode_batch([prompts[i]["prompt"] for i in need])):
                    tokens[i] = t
                out = []
                for s in range(0, len(chunk), batch_size):
                    batch = chunk[s:s + batch_size]
                    # Always batch_size rows (the last repeated), so every call reuses compiled shapes.
                    rows_in = batch + [batch[-1]] * (batch_size - len(batch))
                    keys = decode.row_keys(seed, [i for i, _ in rows_in], [j for _, j in rows_in])
                    for (i, j), toks in zip(batch, sampler([tokens[i] for i, _ in rows_in], keys)):
                        if i % hosts == host:
                            out.append(sample_record(prompts[i], j, stop.truncate(vocab.decode(toks)),
                                                     round_index=round_index, seed=seed))
                    bar.update(len(batch))
                    faults.point("sample.batch")
                if not part.exists():
                    write_jsonl(chunks_dir / f"chunk-{c:05d}.jsonl", out)
    if part.exists():
        return part
    records = []
    for c in range(len(chunks)):
        records += read_jsonl(chunks_dir / f"chunk-{c:05d}.jsonl")
    write_jsonl(part, records)
    remove(chunks_dir)
    return part


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
