"""The catalog of tasks: each is rendered in Python (for `mmst tasks --show` and tests) and
registered with SeqIO over the same rendering.

A task's examples are dicts of strings: `inputs` (the prompt), `targets`, and metadata
(`problem_id`, `dataset`, `method`, `gold`) that SeqIO passes through untouched. Output features
are `inputs` (no EOS) and `targets` (EOS appended), the prefix-LM layout that
`seqio.DecoderFeatureConverter` packs for a decoder-only model.

Length policy at the SeqIO edge: examples are rendered to fit the task kind's configured budget
(tasks.prompts.fit_prompt); the `drop_overlong` preprocessor then drops, rather than truncates, any
example that is longer than the sequence lengths a caller asks for, so no model ever sees a prompt
cut in the middle or a solution without its end.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from typing import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

EXAMPLE_KEYS = ("inputs", "targets", "problem_id", "dataset", "method", "gold")


class UnknownTaskError(KeyError):
    """A task name that is not registered; the message lists close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A task split's examples, and how many were dropped because they did not fit their budget."""

    examples: list[dict]
    dropped: int = 0


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str  # few_shot | translation | training | synthetic (selects the feature lengths) | known (tasks.known)
    description: str
    splits: tuple[str, ...]
    # (split, count_tokens or None) -> examples; with a token counter they are fitted to the kind's
    # feature lengths (config.feature_lengths), without one prompts keep every exemplar.
    render: Callable[[str, Callable[[str], int] | None], Rendered]
    # Whether SeqIO's source fits examples with the task's tokenizer. Training tasks are not fitted:
    # their source needs no tokenizer, and `drop_overlong` drops what the caller's lengths do not hold.
    fitted: bool = True


CATALOG: dict[str, TaskInfo] = {}


def get_task_info(name: str) -> TaskInfo:
    if name not in CATALOG:
        close = difflib.get_close_matches(name, CATALOG, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `mmst tasks` lists them"
        raise UnknownTaskError(f"unknown task {name!r}{hint}")
    return CATALOG[name]


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {"inputs": seqio.Feature(vocabulary, add_eos=False, required=True),
            "targets": seqio.Feature(vocabulary, add_eos=True, required=True)}


def examples_to_dataset(examples: Sequence[Mapping[str, str]], keys: Sequence[str] = EXAMPLE_KEYS) -> tf.data.Dataset:
    """String examples as a tf.data dataset with one string feature per key."""
    if not examples:
        return tf.data.Dataset.from_tensor_slices({k: tf.constant([], tf.string) for k in keys})
    return tf.data.Dataset.from_tensor_slices({key: [str(e[key]) for e in examples] for key in keys})


def drop_overlong(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None,
                  output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """Drops (never truncates) tokenized examples longer than the requested lengths (EOS counted)."""
    if not sequence_length:
        return dataset

    def fits(example):
        ok = tf.constant(True)
        for key in ("inputs", "targets"):
            limit = sequence_length.get(key)
            if limit is not None:
                n = tf.size(example[key]) + (1 if output_features[key].add_eos else 0)
                ok = tf.logical_and(ok, n <= limit)
        return ok

    return dataset.filter(fits)


def log_dropped(name: str, split: str, kind: str, dropped: int) -> None:
    if dropped:
        logging.warning("task %s/%s: %d examples dropped: longer than the %s budget even with no "
                        "exemplars", name, split, dropped, kind)


TOKENIZE = (seqio.preprocessors.tokenize, drop_overlong, seqio.preprocessors.append_eos_after_trim)


def register(info: TaskInfo, vocabulary: seqio.Vocabulary) -> seqio.Task:
    """Adds a task to the catalog and to seqio.TaskRegistry (replacing one of the same name)."""

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # examples are materialised in order; the Task shuffles
        count = (lambda text: len(vocabulary.encode(text))) if info.fitted else None
        rendered = info.render(split, count)
        log_dropped(info.name, split, info.kind, rendered.dropped)
        return examples_to_dataset(rendered.examples)

    return register_source(info, seqio.FunctionDataSource(dataset_fn, splits=info.splits), TOKENIZE, vocabulary)


def register_source(info: TaskInfo, source: seqio.DataSource, preprocessors: Sequence[Callable],
                    vocabulary: seqio.Vocabulary) -> seqio.Task:
    """Adds a task with its own SeqIO source and preprocessors to the catalog and the registry."""
    CATALOG[info.name] = info
    seqio.TaskRegistry.remove(info.name)
    return seqio.TaskRegistry.add(info.name, source=source, preprocessors=list(preprocessors),
                                  output_features=output_features(vocabulary))
