"""`mmst tasks`: list the registered SeqIO tasks and mixtures, or show one example of a task.

    mmst tasks                                    # name, kind, splits
    mmst tasks --show gsm8k_code [--split test] [--index 0]

Everything comes from SeqIO's registry, filled by the task module (MIXTURE_OR_TASK_MODULE, default
`tasks`). An example is shown as SeqIO gives it: the prompt fitted to its budget with the task's
tokenizer, the targets and the metadata, with token counts. The project's tasks read the data
directory and tokenizer from gin (`--gin.tasks.data_dir.path=...`, `--gin.tasks.tokenizer.path=...`)
or $MMST_DATA_DIR / $MMST_TOKENIZER.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Sequence

import seqio


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmst tasks", description="List tasks or show an example.")
    parser.add_argument("--show", metavar="TASK", help="show one example of TASK")
    parser.add_argument("--split", help="split to show (default: test if the task has one, else train)")
    parser.add_argument("--index", type=int, default=0, help="which example of the split (default 0)")
    return parser


def _list(out) -> None:
    tasks = sorted(seqio.TaskRegistry.names())
    mixtures = sorted(seqio.MixtureRegistry.names())
    width = max(len(n) for n in tasks + mixtures)
    for name in tasks:
        print(f"{name:<{width}}  {'task':<8} {','.join(seqio.TaskRegistry.get(name).splits)}", file=out)
    for name in mixtures:
        print(f"{name:<{width}}  {'mixture':<8} {','.join(seqio.MixtureRegistry.get(name).splits)}", file=out)


def _task(name: str):
    if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
        return seqio.get_mixture_or_task(name)
    known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `mmst tasks` lists them"
    raise ValueError(f"unknown task {name!r}{hint}")


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _show(name: str, split: str | None, index: int, out) -> int:
    task = _task(name)
    split = split or ("test" if "test" in task.splits else task.splits[0])
    if split not in task.splits:
        raise ValueError(f"{name} has splits {', '.join(task.splits)}, not {split!r}")
    examples = list(task.get_dataset(sequence_length=None, split=split, shuffle=False,
                                     try_in_mem_cache=False).as_numpy_iterator())
    if not 0 <= index < len(examples):
        raise ValueError(f"{name}/{split} has {len(examples)} examples; --index {index} is out of range")
    example = examples[index]
    print(f"# {name} / {split} / example {index} of {len(examples)}", file=out)
    for key in ("problem_id", "dataset", "method", "gold"):
        if key in example:
            print(f"# {key}: {_text(example[key])}", file=out)
    print(f"# tokens: inputs {len(example['inputs'])}, targets {len(example['targets'])} (with EOS)", file=out)
    print("=== inputs ===", file=out)
    print(_text(example["inputs_pretokenized"]), file=out)
    print("=== targets ===", file=out)
    print(_text(example["targets_pretokenized"]), file=out)
    return 0


def main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as e:  # argparse has printed the usage and the error
        return int(e.code or 0)
    try:
        if args.show is None:
            _list(sys.stdout)
            return 0
        return _show(args.show, args.split, args.index, sys.stdout)
    except (ValueError, FileNotFoundError) as e:  # every task error says what to set
        print(f"mmst tasks: {e}", file=sys.stderr)
        return 2
