"""SeqIO tasks of the synthetic world (zero-shot prompts, `synthetic` feature lengths).

- `synthetic_{method}`: all families; `synthetic_{family}_{method}`: one family. Splits train/test;
  `inputs` the prompt, `targets` the gold answer (problems to sample and to evaluate).
- `synthetic_text_to_code`, `synthetic_code_to_text`: translation prompts built from the reference
  solution of the source method, `targets` the reference solution of the other (translation pairs).
- `synthetic_bootstrap`: the bootstrap corpus (train split only): prompt -> reference completion.

The world and corpus come from gin: `tasks.synthetic_world.{seed, n_train, n_test}` and
`tasks.bootstrap.{coverage, translation_coverage, seed}`.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import gin
import seqio

from tasks import config, prompts
from tasks.catalog import Rendered, TaskInfo, register
from tasks.problem_tasks import render_problems
from tasks.synthetic import corpus, world
from tasks.training import render_training

Counter = Callable[[str], int] | None


@functools.lru_cache(maxsize=4)
def _cached_world(seed: int, n_train: int, n_test: int, families: tuple[str, ...] | None,
                  digits: tuple[int, int] | None, steps: tuple[int, int] | None, related: tuple[str, ...] = ()
                  ) -> dict[str, list[world.SyntheticProblem]]:
    difficulty = None
    if digits is not None or steps is not None:
        difficulty = {}
        for name in (families or world.PROBLEM_FAMILIES) + related:
            if name not in world.FAMILIES:
                raise config.TaskConfigError(f"unknown synthetic family {name!r}; families: {sorted(world.FAMILIES)}")
            default = world.FAMILIES[name].difficulty
            difficulty[name] = world.Difficulty(digits=tuple(digits or default.digits),
                                                steps=tuple(steps or default.steps))
    try:
        return world.world_splits(seed=seed, n_train=n_train, n_test=n_test, families=families,
                                  difficulty=difficulty, related=related)
    except (KeyError, ValueError) as e:
        raise config.TaskConfigError(f"tasks.synthetic_world: {e}") from e


@gin.configurable("synthetic_world", module="tasks")
def synthetic_world(seed: int = 0, n_train: int = 2000, n_test: int = 200, families=None, digits=None,
                    steps=None, related=()) -> dict[str, list[world.SyntheticProblem]]:
    """The world's train/test problems (`n_train`, `n_test` per family, before removing train
    questions that are also test questions). `families`: a subset of the problem families (default
    all); `digits`, `steps`: (low, high) ranges that replace every family's own; `related`: related
    families to add (world.RELATED_FAMILIES, e.g. ('compare',)), read by the `synthetic_{family}_text`
    tasks only: the bootstrap corpus sees them in text, the all-family tasks never hold them."""
    return _cached_world(seed, n_train, n_test, None if families is None else tuple(families),
                         None if digits is None else tuple(digits), None if steps is None else tuple(steps),
                         tuple(related))


@gin.configurable("bootstrap", module="tasks")
def bootstrap_corpus(coverage: Mapping[str, Mapping[str, float]] | None = None,
                     translation_coverage: Mapping[str, Mapping[str, float]] | None = None,
                     seed: int = 0) -> list[dict]:
    """The bootstrap corpus of the world's training problems; coverage tables are read for the
    world's families only."""
    problems = synthetic_world()["train"]
    families = {p.family for p in problems}
    if coverage is not None:
        coverage = {m: {f: v for f, v in table.items() if f in families} for m, table in coverage.items()}
    if translation_coverage is not None:
        translation_coverage = {d: {f: v for f, v in table.items() if f in families}
                                for d, table in translation_coverage.items()}
    return corpus.build_bootstrap_corpus(problems, coverage, translation_coverage, seed)


def problems_of(split: str, family: str | None):
    """The split's problems of one family, or (None) of every problem family: never a related one."""
    return [p for p in synthetic_world()[split]
            if p.family == family or (family is None and not world.FAMILIES[p.family].related)]


def render_reference_translations(problems, direction: str, count_tokens: Counter = None,
                                  lengths: Mapping[str, int] | None = None) -> Rendered:
    return render_training((corpus.translation_record(p, direction, seed=0) for p in problems),
                           count_tokens, lengths)


def register_synthetic_tasks(vocabulary: seqio.Vocabulary) -> list[str]:
    lengths = lambda: config.feature_lengths("synthetic")  # noqa: E731 (read at load time, after gin)
    infos = []
    for family in (None, *world.FAMILIES):
        for method in prompts.METHODS if family is None or not world.FAMILIES[family].related else ("text",):
            def render(split, count_tokens, family=family, method=method):
                return render_problems((p.to_problem() for p in problems_of(split, family)), method,
                                       count_tokens, lengths())
            what = "all families" if family is None else f"family {family}"
            name = f"synthetic_{method}" if family is None else f"synthetic_{family}_{method}"
            infos.append(TaskInfo(name, "synthetic", f"synthetic world, {what}, {method}; targets: gold",
                                  ("train", "test"), render))
    for direction in prompts.DIRECTIONS:
        def render(split, count_tokens, direction=direction):
            return render_reference_translations(problems_of(split, None), direction, count_tokens, lengths())
        infos.append(TaskInfo(f"synthetic_{direction}", "synthetic",
                              f"synthetic world, reference {direction.replace('_', ' ')} translation pairs",
                              ("train", "test"), render))

    def render_bootstrap(split, count_tokens):
        del split
        return render_training(bootstrap_corpus(), count_tokens, lengths())

    infos.append(TaskInfo("synthetic_bootstrap", "synthetic",
                          "synthetic bootstrap corpus (tasks.bootstrap coverage): prompt -> reference solution",
                          ("train",), render_bootstrap, fitted=False))
    for info in infos:
        register(info, vocabulary)
    return [info.name for info in infos]
