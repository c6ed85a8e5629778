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


def synthetic() -> tuple[Problems, list[dict]]:
    """The synthetic world's problems and its bootstrap corpus (gin-bound sizes and coverage)."""
    from tasks.synthetic import tasks as synthetic_tasks

    world = synthetic_tasks.synthetic_world()
    corpus = synthetic_tasks.bootstrap_corpus()
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
