"""`mmst tasks`: list the registered tasks and mixtures, or show a rendered example of one.

    mmst tasks                                    # name, kind, splits, what it holds
    mmst tasks --show gsm8k_code [--split test] [--index 0]

The data directory and tokenizer come from gin (`--gin.tasks.data_dir.path=...`,
`--gin.tasks.tokenizer.path=...`) or $MMST_DATA_DIR / $MMST_TOKENIZER. Without a tokenizer the
example is shown with every exemplar and no token counts; with one it is fitted to the task's
feature lengths and the counts are printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmst tasks", description="List tasks or show a rendered example.")
    parser.add_argument("--show", metavar="TASK", help="render one example of TASK")
    parser.add_argument("--split", help="split to show (default: test if the task has one, else train)")
    parser.add_argument("--index", type=int, default=0, help="which example of the split (default 0)")
    return parser


def _list(out) -> None:
    import tasks
    from tasks.catalog import CATALOG

    width = max(len(n) for n in tasks.TASK_NAMES)
    for name in tasks.TASK_NAMES:
        info = CATALOG[name]
        print(f"{name:<{width}}  {info.kind:<11} {','.join(info.splits):<10}  {info.description}", file=out)
    for name in tasks.MIXTURE_NAMES:
        print(f"{name:<{width}}  {'mixture':<11} {'train':<10}  rates from tasks.mixture_rates.rates", file=out)


def _token_counter():
    """A token counter over the configured tokenizer, or None when none is configured."""
    from tasks import config
    from tasks.vocabulary import DeferredVocabulary

    try:
        config.tokenizer_path()
    except config.ConfigError:
        return None
    vocabulary = DeferredVocabulary()
    return lambda text: len(vocabulary.encode(text))


def _show(name: str, split: str | None, index: int, out) -> int:
    from tasks.catalog import get_task_info

    info = get_task_info(name)
    split = split or ("test" if "test" in info.splits else info.splits[0])
    if split not in info.splits:
        print(f"mmst tasks: {name} has splits {', '.join(info.splits)}, not {split!r}", file=sys.stderr)
        return 2
    count = _token_counter()
    rendered = info.render(split, count)
    if not 0 <= index < len(rendered.examples):
        print(f"mmst tasks: {name}/{split} has {len(rendered.examples)} examples; --index {index} is out of range",
              file=sys.stderr)
        return 2
    example = rendered.examples[index]
    print(f"# {name} / {split} / example {index} of {len(rendered.examples)}"
          f" ({rendered.dropped} dropped as over budget)", file=out)
    for key in ("problem_id", "dataset", "method", "gold"):
        print(f"# {key}: {example[key]}", file=out)
    if count is not None:
        print(f"# tokens: inputs {count(example['inputs'])}, targets {count(example['targets'])}", file=out)
    print("=== inputs ===", file=out)
    print(example["inputs"], file=out)
    print("=== targets ===", file=out)
    print(example["targets"], file=out)
    return 0


def main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as e:  # argparse has printed the usage and the error
        return int(e.code or 0)
    from tasks import config, readers, records
    from tasks.catalog import UnknownTaskError

    try:
        if args.show is None:
            _list(sys.stdout)
            return 0
        return _show(args.show, args.split, args.index, sys.stdout)
    except (UnknownTaskError, config.ConfigError, readers.DataError, records.RecordError) as e:
        print(f"mmst tasks: {e}", file=sys.stderr)
        return 2
