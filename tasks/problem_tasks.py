"""Tasks over the public datasets: one per dataset and method, and the translation tasks.

- `{dataset}_{method}` for the math datasets (gsm8k, svamp, mawps_{addsub,multiarith,singleeq,
  singleop}, asdiv, aqua) x (text, code), and `strategyqa_text`, `commonsenseqa_text` for evaluating
  the text method on related tasks. Splits `train` and `test` (tasks.splits). `inputs` is the
  8-shot (6-shot for the two related tasks) prompt, `targets` the canonical gold answer: these
  tasks give problems to sample and to evaluate, not solutions to train on.
- `mmst_translate_text_to_code`, `mmst_translate_code_to_text`: few-shot prompts that rewrite
  verified solutions of one method as the other. Their records are read at run time from the files
  bound to `tasks.translation_sources.files` ({"text": [...], "code": [...]}: verified records of
  the source method; only records with `correct` true, or no `correct` field, are used). The
  problem is read back from each record's own prompt, the exemplars from its dataset. Split `train`.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Iterable, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from tasks import config, prompts, records, splits
from mmst_jax.records import TRANSLATION_SOURCE_FIELDS, as_string_dataset, from_string_features
from tasks.catalog import (EXAMPLE_KEYS, TOKENIZE, Rendered, TaskInfo, examples_to_dataset, log_dropped, register,
                           register_source)
from tasks.exemplars import exemplars_for
from tasks.readers import Problem

MATH_DATASETS = ("gsm8k", "svamp", "mawps_addsub", "mawps_multiarith", "mawps_singleeq", "mawps_singleop",
                 "asdiv", "aqua")
TEXT_ONLY_DATASETS = ("strategyqa", "commonsenseqa")

Counter = Callable[[str], int] | None


def shots_for(dataset: str) -> list[prompts.Shot]:
    """The few-shot exemplars of a dataset; the synthetic world's prompts have none."""
    if dataset.startswith("synthetic"):
        return []
    return [prompts.Shot(e.question, e.choices, e.text, e.code) for e in exemplars_for(dataset)]


def _fit(build: Callable[[int], str], n_shots: int, targets: str, count_tokens: Counter,
         lengths: Mapping[str, int] | None) -> str | None:
    """The prompt, fitted to the budget (see tasks.prompts.fit_prompt); None when it cannot fit."""
    if count_tokens is None or lengths is None:
        return build(n_shots)
    if count_tokens(targets) + 1 > lengths["targets"]:  # + EOS
        return None
    fitted = prompts.fit_prompt(build, n_shots, lengths["inputs"], count_tokens)
    return None if fitted is None else fitted[0]


def render_problems(problems: Iterable[Problem], method: str, count_tokens: Counter = None,
                    lengths: Mapping[str, int] | None = None) -> Rendered:
    """Problem examples of one method: few-shot prompt in `inputs`, gold in `targets`."""
    examples, dropped = [], 0
    for p in problems:
        shots = shots_for(p.dataset)
        prompt = _fit(lambda k: prompts.solve_prompt(p.question, p.choices, method, shots, k), len(shots),
                      p.gold, count_tokens, lengths)
        if prompt is None:
            dropped += 1
            continue
        examples.append({"inputs": prompt, "targets": p.gold, "problem_id": p.id, "dataset": p.dataset,
                         "method": method, "gold": p.gold})
    return Rendered(examples, dropped)


def render_translations(source_records: Iterable[dict], direction: str, count_tokens: Counter = None,
                        lengths: Mapping[str, int] | None = None) -> Rendered:
    """Translation examples from verified records of the direction's source method."""
    if direction not in prompts.DIRECTIONS:
        raise prompts.PromptError(f"unknown direction {direction!r}; directions are {prompts.DIRECTIONS}")
    src, dst = direction.split("_to_")
    examples, dropped = [], 0
    for r in source_records:
        if r["method"] != src or r.get("correct") is False:
            continue
        block = prompts.last_problem_block(r["prompt"])
        source = prompts.solution_of(src, r["completion"])
        shots = shots_for(r["dataset"])
        gold = str(r["gold"])
        prompt = _fit(lambda k: prompts.translation_prompt(block, direction, source, shots, k), len(shots),
                      gold, count_tokens, lengths)
        if prompt is None:
            dropped += 1
            continue
        examples.append({"inputs": prompt, "targets": gold, "problem_id": str(r.get("problem_id", "")),
                         "dataset": r["dataset"], "method": dst, "gold": gold,
                         "source_sample_index": str(r.get("sample_index", 0))})
    return Rendered(examples, dropped)


TRANSLATION_KEYS = (*EXAMPLE_KEYS, "source_sample_index")


def translation_preprocessor(direction: str) -> Callable:
    """The SeqIO preprocessor that renders translation prompts from a source of verified records
    (features `mmst_jax.records.TRANSLATION_SOURCE_FIELDS`), fitted with the task's tokenizer."""

    def render(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
        vocabulary = output_features["inputs"].vocabulary
        source = [from_string_features(ex) for ex in dataset.as_numpy_iterator()]
        rendered = render_translations(source, direction, lambda text: len(vocabulary.encode(text)),
                                       config.feature_lengths("translation"))
        log_dropped(f"mmst_translate_{direction}", "train", "translation", rendered.dropped)
        return examples_to_dataset(rendered.examples, TRANSLATION_KEYS)

    return render


@gin.configurable("translation_sources", module="tasks")
def translation_sources(method: str, files: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The verified-record files (globs) whose `method` solutions the translation tasks rewrite."""
    files = files or {}
    if not files.get(method):
        raise config.TaskConfigError(
            f"no verified {method} records to translate: bind tasks.translation_sources.files = "
            f"{{'{method}': ['RUN_DIR/round_000/verified/{method}/part-*.jsonl']}}")
    return records.expand(files[method])


def _problem_renderer(dataset: str, method: str):
    def render(split: str, count_tokens: Counter) -> Rendered:
        problems = splits.cached_splits(config.data_dir()).get(dataset, split)[:config.problems_per_split()]
        return render_problems(problems, method, count_tokens, config.feature_lengths("few_shot"))
    return render


def _translation_source(direction: str) -> seqio.DataSource:
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del split, shuffle_files, seed
        source = records.read_records(translation_sources(direction.split("_to_")[0])).records
        return as_string_dataset(source, TRANSLATION_SOURCE_FIELDS)
    return seqio.FunctionDataSource(dataset_fn, splits=("train",))


def _translation_renderer(direction: str):
    def render(split: str, count_tokens: Counter) -> Rendered:
        del split
        source = records.read_records(translation_sources(direction.split("_to_")[0])).records
        return render_translations(source, direction, count_tokens, config.feature_lengths("translation"))
    return render


def register_problem_tasks(vocabulary: seqio.Vocabulary) -> list[str]:
    """Registers every dataset x method task and the two translation tasks; returns their names."""
    names = []
    for dataset in MATH_DATASETS + TEXT_ONLY_DATASETS:
        methods = prompts.METHODS if dataset in MATH_DATASETS else ("text",)
        for method in methods:
            n = len(exemplars_for(dataset))
            info = TaskInfo(f"{dataset}_{method}", "few_shot",
                            f"{dataset} problems, {n}-shot {method} prompts; targets: gold answer",
                            splits.SPLITS, _problem_renderer(dataset, method))
            register(info, vocabulary)
            names.append(info.name)
    for direction in prompts.DIRECTIONS:
        info = TaskInfo(f"mmst_translate_{direction}", "translation",
                        f"few-shot {direction.replace('_', ' ')} rewrites of verified records named by "
                        f"tasks.translation_sources.files; targets: gold answer",
                        ("train",), _translation_renderer(direction))
        register_source(info, _translation_source(direction), (translation_preprocessor(direction), *TOKENIZE),
                        vocabulary)
        names.append(info.name)
    return names


def data_dir_problems(dataset: str, split: str, data_dir: str | pathlib.Path | None = None) -> list[Problem]:
    """A dataset split's problems (deduplicated), from a given data directory or the configured one."""
    return splits.cached_splits(pathlib.Path(data_dir) if data_dir else config.data_dir()).get(dataset, split)
