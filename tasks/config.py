"""Where the tasks find their inputs: the data directory, the tokenizer and the feature lengths.

These are the only gin configurables of the data side (gin stays at the edge): library functions
take plain arguments, and the registered tasks ask these functions at the moment they load data.

- data directory: `tasks.data_dir.path` in gin, else the environment variable `MMST_DATA_DIR`.
- tokenizer: `tasks.tokenizer.path` in gin (an HF tokenizer.json or a directory holding one), else
  the environment variable `MMST_TOKENIZER`.
- problems per split: `tasks.problems_per_split.limit` keeps the first N problems of every dataset
  split (None: all), as a rehearsal of a run does.
- feature lengths: `tasks.feature_lengths.lengths` maps a task kind (`few_shot`, `translation`,
  `training`, `synthetic`) to `{"inputs": N, "targets": M}`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping

import gin

DATA_DIR_ENV = "MMST_DATA_DIR"
TOKENIZER_ENV = "MMST_TOKENIZER"

# Token budgets per task kind. Few-shot prompts (8 exemplars of GSM8K, say) are the longest inputs;
# inputs + targets = 2048 is BLOOM's training context. The synthetic world is sized for a tiny model. Prompts are fitted to these budgets by dropping
# leading exemplars (see tasks.prompts.fit_prompt); nothing is ever cut mid-text.
DEFAULT_FEATURE_LENGTHS: dict[str, dict[str, int]] = {
    "few_shot": {"inputs": 1536, "targets": 512},
    "translation": {"inputs": 1536, "targets": 512},
    "training": {"inputs": 1536, "targets": 512},
    "synthetic": {"inputs": 160, "targets": 96},
}


class TaskConfigError(ValueError):
    """A data directory, tokenizer or length that is missing or unusable; the message says the fix."""


@gin.configurable("data_dir", module="tasks")
def data_dir(path: str | None = None) -> pathlib.Path:
    """The directory of the public datasets (one folder per dataset, as published)."""
    source = "gin tasks.data_dir.path"
    if path is None:
        path, source = os.environ.get(DATA_DIR_ENV), f"${DATA_DIR_ENV}"
    if not path:
        raise TaskConfigError(
            f"no data directory: bind tasks.data_dir.path in gin (--gin.tasks.data_dir.path=\"DIR\") "
            f"or set the environment variable {DATA_DIR_ENV}")
    resolved = pathlib.Path(path).expanduser()
    if not resolved.is_dir():
        raise TaskConfigError(f"data directory {resolved} (from {source}) does not exist or is not a directory")
    return resolved


@gin.configurable("tokenizer", module="tasks")
def tokenizer_path(path: str | None = None) -> str:
    """The tokenizer the tasks encode with: an HF tokenizer.json or a directory holding one."""
    if path is None:
        path = os.environ.get(TOKENIZER_ENV)
    if not path:
        raise TaskConfigError(
            f"no tokenizer: bind tasks.tokenizer.path in gin (--gin.tasks.tokenizer.path=\"DIR\") "
            f"or set the environment variable {TOKENIZER_ENV}")
    return str(path)


@gin.configurable("problems_per_split", module="tasks")
def problems_per_split(limit: int | None = None) -> int | None:
    """How many problems of each dataset split the problem tasks keep, the first in the split's
    order (None: all)."""
    if limit is not None and limit < 1:
        raise TaskConfigError(f"tasks.problems_per_split.limit must be >= 1 or None, got {limit}")
    return limit


@gin.configurable("feature_lengths", module="tasks")
def feature_lengths(kind: str, lengths: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, int]:
    """The {"inputs", "targets"} token budget of a task kind."""
    table = {**DEFAULT_FEATURE_LENGTHS, **(lengths or {})}
    if kind not in table:
        raise TaskConfigError(f"no feature lengths for task kind {kind!r}; known kinds: {sorted(table)}")
    out = dict(table[kind])
    if set(out) != {"inputs", "targets"} or any(int(v) <= 0 for v in out.values()):
        raise TaskConfigError(f"feature lengths for {kind!r} must be positive 'inputs' and 'targets', got {out}")
    return out
