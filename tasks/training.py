"""Training tasks over the JSON Lines files a round writes, and mixtures of them.

A training example is a record's `prompt` as `inputs` and its `completion` as `targets`: the
`train/` records the build stage writes (verified samples, verified translations, or the synthetic
bootstrap corpus). Records whose `correct` is false are left out. Examples whose prompt or
completion is longer than the `training` feature lengths are dropped and counted, never truncated.

Registered at import:
- `mmst_train_text`, `mmst_train_code`: the files bound to `tasks.training_files.files`
  ({"text": [globs], "code": [globs]}), read when the task is loaded; each example keeps the
  record's `method` only as metadata, so a file may hold either method's records.
- `mmst_train`: the mixture of the two with rates from `tasks.mixture_rates.rates`
  ({"mmst_train_text": 1.0, "mmst_train_code": 1.0} by default), read when the mixture is loaded.

For other layouts, `register_training_task(name, files, vocabulary)` and
`register_training_mixture(name, rates)` register tasks over files and mixtures named at run time,
and `register_mixtures_from_gin()` registers the mixtures bound to `tasks.mixtures.mixtures`
({"name": {"task": rate}}) once gin is parsed.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import gin
import seqio

from tasks import config, prompts, records
from tasks.catalog import Rendered, TaskInfo, register

DEFAULT_RATES = {"mmst_train_text": 1.0, "mmst_train_code": 1.0}


def render_training(source: Iterable[dict], count_tokens: Callable[[str], int] | None = None,
                    lengths: Mapping[str, int] | None = None) -> Rendered:
    examples, dropped = [], 0
    for r in source:
        if r.get("correct") is False:
            continue
        if count_tokens is not None and lengths is not None and (
                count_tokens(r["prompt"]) > lengths["inputs"]
                or count_tokens(r["completion"]) + 1 > lengths["targets"]):
            dropped += 1
            continue
        examples.append({"inputs": r["prompt"], "targets": r["completion"],
                         "problem_id": str(r.get("problem_id", "")), "dataset": r["dataset"],
                         "method": r["method"], "gold": str(r["gold"])})
    return Rendered(examples, dropped)


@gin.configurable("training_files", module="tasks")
def training_files(method: str, files: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The record files (globs) of a method's training task."""
    files = files or {}
    if not files.get(method):
        raise config.TaskConfigError(
            f"no training records for {method}: bind tasks.training_files.files = "
            f"{{'{method}': ['RUN_DIR/round_000/train/{method}/part-*.jsonl']}}")
    return records.expand(files[method])


@gin.configurable("mixture_rates", module="tasks")
def mixture_rates(rates: Mapping[str, float] | None = None) -> dict[str, float]:
    rates = dict(DEFAULT_RATES if rates is None else rates)
    for name, rate in rates.items():
        if not isinstance(rate, (int, float)) or rate < 0:
            raise config.TaskConfigError(f"mixture rate of {name!r} must be a number >= 0, got {rate!r}")
    return rates


def _gin_rate(task: seqio.Task) -> float:
    rates = mixture_rates()
    if task.name not in rates:
        raise config.TaskConfigError(f"tasks.mixture_rates.rates has no rate for {task.name!r}: {rates}")
    return float(rates[task.name])


def _renderer(files: Callable[[], Sequence[str]]):
    def render(split: str, count_tokens: Callable[[str], int] | None) -> Rendered:
        del split
        source = records.read_records(files()).records
        return render_training(source, count_tokens, config.feature_lengths("training"))
    return render


def register_training_task(name: str, files: Sequence[str] | Callable[[], Sequence[str]],
                           vocabulary: seqio.Vocabulary) -> seqio.Task:
    """A task over record files; `files` may be a function, called each time the task loads."""
    files_fn = files if callable(files) else (lambda: records.expand(files))
    info = TaskInfo(name, "training", "training records (prompt -> completion) from JSONL files",
                    ("train",), _renderer(files_fn), fitted=False)
    return register(info, vocabulary)


def register_training_mixture(name: str, rates: Mapping[str, float | Callable[[seqio.Task], float]]
                              ) -> seqio.Mixture:
    """A mixture of registered tasks; a rate is a number or a function of the task."""
    seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, list(rates.items()))


def _default_files(method: str) -> list[str]:
    """A default task's files; none needed when the gin rates leave the task out (rate 0)."""
    try:
        return training_files(method)
    except config.TaskConfigError:
        if mixture_rates().get(f"mmst_train_{method}") == 0:
            return []
        raise


@gin.configurable("mixtures", module="tasks")
def register_mixtures_from_gin(mixtures: Mapping[str, Mapping[str, float]] | None = None) -> list[str]:
    """Registers the mixtures bound in gin, `{"name": {"task": rate, ...}}`; call after gin is parsed."""
    for name, rates in (mixtures or {}).items():
        for task_name in rates:
            if task_name not in seqio.TaskRegistry.names():
                raise config.TaskConfigError(f"mixture {name!r} names unknown task {task_name!r}")
        register_training_mixture(name, mixture_rates(rates))
    return list(mixtures or {})


def register_default_training(vocabulary: seqio.Vocabulary) -> list[str]:
    for method in prompts.METHODS:
        register_training_task(f"mmst_train_{method}", lambda m=method: _default_files(m), vocabulary)
    register_training_mixture("mmst_train", {name: _gin_rate for name in DEFAULT_RATES})
    return [f"mmst_train_{m}" for m in prompts.METHODS]
