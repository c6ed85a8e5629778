"""Where a run's problems come from: the synthetic world, or the public datasets.

    synthetic  tasks.synthetic (world size from gin `tasks.synthetic_world.*`, bootstrap corpus from
               `tasks.bootstrap.*`): train and test problems of every family, dataset per family
    datasets   the named datasets' train/test splits (tasks.problem_tasks.data_dir_problems, data
               from `tasks.data_dir.path` or $MMST_DATA_DIR); `related` datasets are evaluated
               with the text method only
"""

from __future__ import annotations

from typing import Sequence

from mmst_jax.mmst.stages import Problems

SOURCES = ("synthetic", "datasets")


def synthetic(families: Sequence[str] | None = None, digits: tuple[int, int] | None = None,
              steps: tuple[int, int] | None = None, n_train: int | None = None, n_test: int | None = None,
              seed: int | None = None, coverage=None, translation_coverage=None,
              corpus_seed: int = 0) -> tuple[Problems, list[dict]]:
    """The synthetic world's problems and its bootstrap corpus.

    With no arguments: the world and corpus the tasks package's gin bindings give
    (`tasks.synthetic_world.*`, `tasks.bootstrap.*`). Otherwise a world of the named `families`
    (default all) with every family's `digits` and `steps` ranges replaced when given, and a
    corpus with the given coverage tables (default: tasks.synthetic.corpus's)."""
    from tasks.synthetic import corpus as corpus_lib
    from tasks.synthetic import tasks as synthetic_tasks
    from tasks.synthetic import world as world_lib

    custom = any(x is not None for x in (families, digits, steps, n_train, n_test, seed, coverage,
                                         translation_coverage))
    if not custom:
        world = synthetic_tasks.synthetic_world()
        corpus = synthetic_tasks.bootstrap_corpus()
    else:
        names = list(families or world_lib.FAMILIES)
        difficulty = {}
        for name in names:
            if name not in world_lib.FAMILIES:
                raise ValueError(f"unknown synthetic family {name!r}; families: {sorted(world_lib.FAMILIES)}")
            default = world_lib.FAMILIES[name].difficulty
            difficulty[name] = world_lib.Difficulty(digits=tuple(digits or default.digits),
                                                    steps=tuple(steps or default.steps))
        world = world_lib.world_splits(seed=seed or 0, n_train=n_train or 2000, n_test=n_test or 200,
                                       families=names, difficulty=difficulty)
        if coverage is not None:
            coverage = {m: {f: v for f, v in table.items() if f in names} for m, table in coverage.items()}
        if translation_coverage is not None:
            translation_coverage = {d: {f: v for f, v in table.items() if f in names}
                                    for d, table in translation_coverage.items()}
        corpus = corpus_lib.build_bootstrap_corpus(world["train"], coverage, translation_coverage, corpus_seed)
    return Problems(train=[p.to_problem() for p in world["train"]],
                    test=[p.to_problem() for p in world["test"]]), corpus


def datasets(names: Sequence[str], related: Sequence[str] = (), data_dir: str | None = None) -> Problems:
    from tasks.problem_tasks import MATH_DATASETS, TEXT_ONLY_DATASETS, data_dir_problems

    for name in names:
        if name not in MATH_DATASETS:
            raise ValueError(f"dataset {name!r} is not one both methods solve; choose from {MATH_DATASETS}")
    for name in related:
        if name not in TEXT_ONLY_DATASETS + MATH_DATASETS:
            raise ValueError(f"related dataset {name!r} is unknown; choose from {TEXT_ONLY_DATASETS}")
    if not names:
        raise ValueError("no datasets: bind mmst.run.datasets, e.g. ['gsm8k', 'svamp']")
    train = [p for n in names for p in data_dir_problems(n, "train", data_dir)]
    test = [p for n in names for p in data_dir_problems(n, "test", data_dir)]
    rel = [p for n in related for p in data_dir_problems(n, "test", data_dir)]
    return Problems(train=train, test=test, related=rel)
