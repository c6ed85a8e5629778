"""Prompt records: where the prompts to sample come from.

A prompt record is a dict with a string `prompt` and the metadata its sample records carry:
`problem_id`, `dataset`, `method`, `gold` (and, from the MMST loop, any extra fields).

    read_prompts(path)          # a JSONL, one object a line with `prompt`
    read_task(name, split)      # a registered SeqIO task or mixture (`inputs` is the prompt)
    DEFAULT_PROMPTS             # four built-in prompts (text and code) for a smoke run
"""

from __future__ import annotations

import os
from typing import Any

from mmst_jax.records import from_string_features, read_jsonl

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


def _check_prompt(record: dict) -> None:
    if not isinstance(record.get("prompt"), str):
        raise ValueError("each line must be an object with a string 'prompt'")


def read_prompts(path: str) -> list[dict[str, Any]]:
    """Reads a prompts JSONL; every line must be an object with a string `prompt`. A line without
    `problem_id` gets `{file name}-{line}`."""
    records = read_jsonl(path, _check_prompt)
    if not records:
        raise ValueError(f"{path} holds no prompts")
    for n, record in enumerate(records, 1):
        record.setdefault("problem_id", f"{os.path.basename(path)}-{n}")
    return records


def read_task(name: str, split: str) -> list[dict[str, Any]]:
    """The examples of a registered SeqIO task or mixture as prompt records (see `task_prompts`).
    The caller imports the module that registers the task."""
    import seqio

    try:
        task = seqio.get_mixture_or_task(name)
    except ValueError as e:
        raise ValueError(f"no SeqIO task or mixture named {name!r}: {e}") from e
    records = task_prompts(task, split)
    if not records:
        raise ValueError(f"SeqIO task {name!r} has no examples in split {split!r}")
    return records


def task_prompts(task, split: str) -> list[dict[str, Any]]:
    """A SeqIO task's (or mixture's) examples in order as prompt records: `prompt` is the rendered
    `inputs`, and every string feature of the example (`problem_id`, `dataset`, `method`, `gold`,
    ...) is kept; problem_id `{name}-{i}`, dataset `name` and method "text" unless the example has
    its own."""
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, try_in_mem_cache=False)
    vocab = task.output_features["inputs"].vocabulary
    records = []
    for i, ex in enumerate(dataset.as_numpy_iterator()):
        text = ex.get("inputs_pretokenized")
        prompt = text.decode("utf-8") if text is not None else vocab.decode(ex["inputs"].tolist())
        fields = {k: v for k, v in from_string_features(ex).items() if not k.endswith("_pretokenized")}
        records.append({"prompt": prompt, "problem_id": f"{task.name}-{i}", "dataset": task.name, "method": "text",
                        **fields})
    return records
