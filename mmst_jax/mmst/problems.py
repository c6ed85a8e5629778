"""Where a run's problems, prompts and bootstrap corpus come from: SeqIO tasks, named in gin.

The loop reads tasks from SeqIO's registry only; the module that registers them (`tasks`, or a
user's own) is imported by the command line, as t5x imports `MIXTURE_OR_TASK_MODULE`. A task the
loop reads must follow this contract (docs/architecture.md, "Tasks the loop reads"):

    problem task  `{name}_{method}` for every method (`{name}_text` only, for a related set),
                  splits `train` and `test`; features `inputs` (the prompt, fitted to its budget
                  with the task's tokenizer), `targets`, and string metadata `problem_id`,
                  `dataset`, `method`, `gold`
    translation   one per direction (`TaskNames.translation` with `{direction}` filled in); its
                  preprocessors turn a source of verified records (string features
                  `mmst_jax.records.TRANSLATION_SOURCE_FIELDS`) into prompts of the other method,
                  with `source_sample_index` passed through
    bootstrap     split `train`, a source that needs no tokenizer, examples `inputs` -> `targets`
                  (prompt -> completion) with the same metadata: the base model's training data

Prompts are fitted with the task's tokenizer, which `mmst run` points at the run's own
(`tasks.tokenizer.path`); the loop checks that it is the model's.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from mmst_jax.records import METHODS, TRANSLATION_SOURCE_FIELDS, as_string_dataset, from_string_features
from mmst_jax.sampling.prompts import task_prompts


class TaskError(ValueError):
    """A configured task that is not registered or does not follow the loop's contract."""


@dataclasses.dataclass(frozen=True)
class TaskNames:
    """The SeqIO tasks of a run.

    `problems`: problem sets both methods solve (tasks `{name}_{method}`); `related`: problem sets
    the text method is evaluated on (tasks `{name}_text`, test split only); `translation`: the
    translation task of each direction; `bootstrap`: the training records of a base model trained
    from scratch (None: the base model is a published checkpoint).
    """

    problems: Sequence[str] = ()
    related: Sequence[str] = ()
    translation: str = "mmst_translate_{direction}"
    bootstrap: str | None = None

    def __post_init__(self):
        if not self.problems:
            raise TaskError("no problem tasks: bind mmst.Tasks.problems, e.g. ['synthetic'] or ['gsm8k', 'svamp']")
        if "{direction}" not in self.translation:
            raise TaskError(f"mmst.Tasks.translation={self.translation!r} must contain '{{direction}}'")


@dataclasses.dataclass
class Problems:
    """A run's prompt records per method: `train` (sampled each round), `test` (evaluated), and
    `related` (text method only). Each record holds `problem_id`, `dataset`, `method`, `gold` and
    `prompt`."""

    train: dict[str, list[dict]]
    test: dict[str, list[dict]]
    related: list[dict] = dataclasses.field(default_factory=list)


def get_task(name: str):
    import seqio

    try:
        return seqio.get_mixture_or_task(name)
    except ValueError as e:
        raise TaskError(f"no SeqIO task named {name!r} is registered ({e}); is the module that "
                        "registers it imported (--gin.MIXTURE_OR_TASK_MODULE)?") from None


def problem_prompts(names: TaskNames) -> Problems:
    """Every problem task's train and test prompts, per method, in task order."""
    train = {m: [] for m in METHODS}
    test = {m: [] for m in METHODS}
    for name in names.problems:
        for method in METHODS:
            task = get_task(f"{name}_{method}")
            train[method] += task_prompts(task, "train")
            test[method] += task_prompts(task, "test")
    related = [r for name in names.related for r in task_prompts(get_task(f"{name}_text"), "test")]
    return Problems(train=train, test=test, related=related)


def translation_prompts(names: TaskNames, direction: str, sources: Sequence[dict]) -> list[dict]:
    """Prompts rewriting each verified source record as the direction's target method: the
    configured translation task with the records as its source. Each keeps `problem_id` and
    `source_sample_index` (the source record's `sample_index`)."""
    import seqio

    template = get_task(names.translation.format(direction=direction))
    source = seqio.FunctionDataSource(
        lambda split, shuffle_files, seed=None: as_string_dataset(sources, TRANSLATION_SOURCE_FIELDS),
        splits=("train",))
    task = seqio.Task(f"{template.name}_of_run_records", source, output_features=template.output_features,
                      preprocessors=template.preprocessors)
    out = task_prompts(task, "train")
    if out and "source_sample_index" not in out[0]:
        raise TaskError(f"translation task {template.name!r} does not pass `source_sample_index` through")
    return out


def bootstrap_records(name: str) -> list[dict]:
    """The bootstrap task's examples as training records (prompt -> completion), read from its
    source: no tokenizer is needed (the run's tokenizer is trained on them)."""
    task = get_task(name)
    out = []
    for example in task.source.get_dataset(split="train", shuffle=False).as_numpy_iterator():
        r = from_string_features(example)
        out.append({"problem_id": r["problem_id"], "dataset": r["dataset"], "method": r["method"],
                    "sample_index": 0, "round": 0, "prompt": r["inputs"], "completion": r["targets"],
                    "gold": r["gold"]})
    if not out:
        raise TaskError(f"bootstrap task {name!r} has no training examples")
    return out


def task_vocabulary(names: TaskNames):
    """The vocabulary the problem tasks fit their prompts with."""
    return get_task(f"{names.problems[0]}_{METHODS[0]}").output_features["inputs"].vocabulary
