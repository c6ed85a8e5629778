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
    known         (optional; `TaskNames.known` with `{name}`, a problem set, and `{method}` filled
                  in) split `train`: solutions known to be correct, examples `inputs` -> `targets`
                  where `inputs` is the problem task's own train prompt for the problem (fitted
                  with the same tokenizer and budget, so it equals the prompt the loop samples),
                  `targets` the solution as the method's completion, and string metadata
                  `problem_id` (an id of the problem task's train split), `dataset`, `method`,
                  `gold`; several examples may share a problem. Round 1 adds them to its samples
                  (`known: true`), at most `num_samples` per problem and method, for the problems
                  it samples; they are verified like every sample. A rehearsal of a configuration
                  on a model that solves nothing (a random one) uses them so that the round has
                  training records, and fine-tuning, export and evaluation of the fine-tuned
                  model all run. A pattern without `{method}` (or `{name}`) names one task for
                  both methods (or every problem set), its examples told apart by `method`.

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
    from scratch (None: the base model is a published checkpoint); `known`: the pattern of the
    known-solution tasks (`{name}` a problem set, `{method}` a method; e.g. `mmst_known_{name}_{method}`)
    whose solutions round 1 adds to its samples (None: none, the default).
    """

    problems: Sequence[str] = ()
    related: Sequence[str] = ()
    translation: str = "mmst_translate_{direction}"
    bootstrap: str | None = None
    known: str | None = None

    def __post_init__(self):
        if not self.problems:
            raise TaskError("no problem tasks: bind mmst.Tasks.problems, e.g. ['synthetic'] or ['gsm8k', 'svamp']")
        if "{direction}" not in self.translation:
            raise TaskError(f"mmst.Tasks.translation={self.translation!r} must contain '{{direction}}'")
        if self.known is not None:
            try:
                self.known.format(name="", method="")
            except (KeyError, IndexError, ValueError) as e:
                raise TaskError(f"mmst.Tasks.known={self.known!r}: the only fields are '{{name}}' and "
                                f"'{{method}}', e.g. 'mmst_known_{{name}}_{{method}}' ({type(e).__name__}: {e})") from None

    def known_tasks(self) -> list[str]:
        """The known-solution tasks of the run's problem sets, in order (none without `known`)."""
        if self.known is None:
            return []
        out = []
        for name in self.problems:
            for method in METHODS:
                task = self.known.format(name=name, method=method)
                if task not in out:
                    out.append(task)
        return out


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


def known_solutions(names: TaskNames) -> dict[str, list[dict]]:
    """The known-solution tasks' examples (`TaskNames.known`) per method, in task order, as
    sample-like records without a sample index: `problem_id`, `dataset`, `method`, `gold`,
    `prompt` (the rendered `inputs`), `completion` (`targets`) and `known: true`. The tasks must
    encode with the problem tasks' vocabulary."""
    out = {m: [] for m in METHODS}
    if names.known is None:
        return out
    vocabulary = task_vocabulary(names)
    for name in names.known_tasks():
        task = get_task(name)
        if task.output_features["inputs"].vocabulary != vocabulary:
            raise TaskError(f"known-solution task {name!r} encodes with another vocabulary than the problem tasks")
        dataset = task.get_dataset(sequence_length=None, split="train", shuffle=False, try_in_mem_cache=False)
        for example in dataset.as_numpy_iterator():
            r = from_string_features(example)
            missing = [k for k in ("inputs_pretokenized", "targets_pretokenized", "problem_id", "dataset", "method",
                                   "gold") if not isinstance(r.get(k), str)]
            if missing or r["method"] not in METHODS:
                raise TaskError(f"known-solution task {name!r}: an example lacks string feature(s) "
                                f"{missing or ['method']} (method one of {METHODS})")
            out[r["method"]].append({"problem_id": r["problem_id"], "dataset": r["dataset"], "method": r["method"],
                                     "gold": r["gold"], "prompt": r["inputs_pretokenized"],
                                     "completion": r["targets_pretokenized"], "known": True})
    return out


def task_vocabulary(names: TaskNames):
    """The vocabulary the problem tasks fit their prompts with."""
    return get_task(f"{names.problems[0]}_{METHODS[0]}").output_features["inputs"].vocabulary
