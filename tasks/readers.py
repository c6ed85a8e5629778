"""Readers for the public datasets in their published formats.

Each reader takes the data directory and returns `Problem`s with a canonical gold answer (see
tasks.answers). A record that cannot be read raises `DatasetError` naming the file and the line (or
the record's index, for files that are one JSON document); with `skip_bad=True` such records are
skipped instead and listed in the returned `ReadResult.skipped`.

Published files (relative to the data directory) and the problems they hold:
  gsm8k/train.jsonl, gsm8k/test.jsonl         question, answer ending in `#### N`
  svamp/SVAMP.json                            a JSON list: Body, Question, Answer (float)
  mawps/{addsub,multiarith,singleeq,singleop}.jsonl, asdiv/asdiv.jsonl
                                              input, target (a number)
  aqua/test.json                              JSON lines: question, options ["A)..."], correct
  strategyqa/task.json                        BIG-bench task: examples[input, target_scores]
  commonsenseqa/{train,dev}_rand_split.jsonl  question.stem, question.choices, answerKey
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any, Callable, Iterator

from tasks import answers

MAWPS_SUBSETS = ("addsub", "multiarith", "singleeq", "singleop")


class DatasetError(ValueError):
    """A dataset file that is missing or holds a record that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem. `gold` is canonical (tasks.answers); `gold_raw` is the gold as published."""

    id: str  # unique across all datasets, e.g. "gsm8k/train/17", "svamp/chal-5"
    dataset: str  # e.g. "gsm8k", "mawps_addsub"
    question: str
    gold: str
    gold_raw: str
    choices: tuple[tuple[str, str], ...] = ()  # (label, text) for multiple choice
    reference: str = ""  # a worked solution as published, where the dataset has one
    published_split: str = ""  # the split of the file it came from, where the dataset has splits


@dataclasses.dataclass(frozen=True)
class BadRecord:
    file: str
    line: int  # 1-based line, or record index + 1 for one-document JSON files
    reason: str


@dataclasses.dataclass
class ReadResult:
    problems: list[Problem]
    skipped: list[BadRecord]


def _require_file(data_dir: pathlib.Path, relative: str) -> pathlib.Path:
    path = pathlib.Path(data_dir) / relative
    if not path.is_file():
        raise DatasetError(f"dataset file {relative} not found in data directory {data_dir} "
                        f"(expected the published layout: see tasks/readers.py)")
    return path


def _iter_jsonl(path: pathlib.Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yields (line number, parsed object or None, error or None) for every non-blank line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as e:
                yield number, None, f"not valid JSON ({e.msg} at column {e.colno})"


def _load_json(path: pathlib.Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e


def _collect(records: Iterator[tuple[int, Any, str | None]], path: pathlib.Path,
             make: Callable[[int, Any], Problem], skip_bad: bool) -> ReadResult:
    """Turns (line, object, parse error) triples into problems, raising or skipping bad ones."""
    problems, skipped = [], []
    for number, obj, error in records:
        if error is None:
            try:
                problems.append(make(number, obj))
                continue
            except (KeyError, TypeError, AttributeError, IndexError, answers.AnswerError) as e:
                error = f"unexpected record ({type(e).__name__}: {e})"
        if not skip_bad:
            raise DatasetError(f"{path}:{number}: {error}; pass skip_bad=True to skip and count such records")
        skipped.append(BadRecord(str(path), number, error))
    return ReadResult(problems, skipped)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"field {field!r} must be a non-empty string, got {value!r}")
    return value.strip()


# --- GSM8K ------------------------------------------------------------------------------------
_CALCULATOR_RE = re.compile(r"<<[^>]*>>")


def gsm8k_reference(answer: str) -> str:
    """GSM8K's worked solution without its calculator annotations and its `#### N` line."""
    body = answer.rsplit("####", 1)[0]
    return _CALCULATOR_RE.sub("", body).strip()


def read_gsm8k(data_dir: pathlib.Path, split: str, skip_bad: bool = False) -> ReadResult:
    if split not in ("train", "test"):
        raise ValueError(f"GSM8K has splits 'train' and 'test', not {split!r}")
    path = _require_file(data_dir, f"gsm8k/{split}.jsonl")

    def make(number: int, obj: Any) -> Problem:
        answer = _text(obj["answer"], "answer")
        if answer.count("####") != 1:
            raise KeyError("the answer has no single '#### N' line")
        raw = answer.rsplit("####", 1)[1].strip()
        return Problem(id=f"gsm8k/{split}/{number}", dataset="gsm8k",
                       question=_text(obj["question"], "question"), gold=answers.canonical_number(raw),
                       gold_raw=raw, reference=gsm8k_reference(answer), published_split=split)

    return _collect(_iter_jsonl(path), path, make, skip_bad)


# --- SVAMP ------------------------------------------------------------------------------------
def read_svamp(data_dir: pathlib.Path, skip_bad: bool = False) -> ReadResult:
    path = _require_file(data_dir, "svamp/SVAMP.json")
    items = _load_json(path)
    if not isinstance(items, list):
        raise DatasetError(f"{path}:1: expected a JSON list of problems, got {type(items).__name__}")

    def make(number: int, obj: Any) -> Problem:
        body, question = _text(obj["Body"], "Body"), _text(obj["Question"], "Question")
        return Problem(id=f"svamp/{_text(obj['ID'], 'ID')}", dataset="svamp",
                       question=f"{body} {question}", gold=answers.canonical_number(obj["Answer"]),
                       gold_raw=repr(obj["Answer"]), reference=_text(obj["Equation"], "Equation"))

    return _collect(((i + 1, obj, None) for i, obj in enumerate(items)), path, make, skip_bad)


# --- MAWPS and ASDiv (input/target JSON lines) -------------------------------------------------
def _read_input_target(data_dir: pathlib.Path, relative: str, dataset: str, skip_bad: bool) -> ReadResult:
    path = _require_file(data_dir, relative)

    def make(number: int, obj: Any) -> Problem:
        return Problem(id=f"{dataset}/{number}", dataset=dataset, question=_text(obj["input"], "input"),
                       gold=answers.canonical_number(obj["target"]), gold_raw=repr(obj["target"]))

    return _collect(_iter_jsonl(path), path, make, skip_bad)


def read_mawps(data_dir: pathlib.Path, subset: str, skip_bad: bool = False) -> ReadResult:
    if subset not in MAWPS_SUBSETS:
        raise ValueError(f"MAWPS subsets are {MAWPS_SUBSETS}, not {subset!r}")
    return _read_input_target(data_dir, f"mawps/{subset}.jsonl", f"mawps_{subset}", skip_bad)


def read_asdiv(data_dir: pathlib.Path, skip_bad: bool = False) -> ReadResult:
    return _read_input_target(data_dir, "asdiv/asdiv.jsonl", "asdiv", skip_bad)


# --- AQuA -------------------------------------------------------------------------------------
_OPTION_RE = re.compile(r"^\s*\(?([A-E])\)\s*(.*)$", re.S)


def read_aqua(data_dir: pathlib.Path, skip_bad: bool = False) -> ReadResult:
    path = _require_file(data_dir, "aqua/test.json")

    def make(number: int, obj: Any) -> Problem:
        choices = []
        for option in obj["options"]:
            match = _OPTION_RE.match(option)
            if not match:
                raise KeyError(f"option {option!r} is not of the form 'A)text'")
            choices.append((match.group(1), match.group(2).strip()))
        labels = "".join(label for label, _ in choices)
        return Problem(id=f"aqua/{number}", dataset="aqua", question=_text(obj["question"], "question"),
                       gold=answers.canonical_choice(obj["correct"], labels), gold_raw=obj["correct"],
                       choices=tuple(choices), reference=str(obj.get("rationale", "")).strip())

    return _collect(_iter_jsonl(path), path, make, skip_bad)


# --- StrategyQA -------------------------------------------------------------------------------
def read_strategyqa(data_dir: pathlib.Path, skip_bad: bool = False) -> ReadResult:
    path = _require_file(data_dir, "strategyqa/task.json")
    task = _load_json(path)
    if not isinstance(task, dict) or not isinstance(task.get("examples"), list):
        raise DatasetError(f"{path}:1: expected a BIG-bench task with a list of 'examples'")

    def make(number: int, obj: Any) -> Problem:
        scores = obj["target_scores"]
        winners = [k for k, v in scores.items() if v == 1]
        if sorted(scores) != ["No", "Yes"] or len(winners) != 1:
            raise KeyError(f"target_scores must score exactly one of Yes/No with 1, got {scores}")
        explanation = str(obj.get("target", ""))
        explanation = explanation.split(".", 1)[1].strip() if "." in explanation else ""
        return Problem(id=f"strategyqa/{number}", dataset="strategyqa", question=_text(obj["input"], "input"),
                       gold=answers.canonical_yes_no(winners[0]), gold_raw=winners[0], reference=explanation)

    return _collect(((i + 1, obj, None) for i, obj in enumerate(task["examples"])), path, make, skip_bad)


# --- CommonsenseQA ----------------------------------------------------------------------------
def read_commonsenseqa(data_dir: pathlib.Path, split: str, skip_bad: bool = False) -> ReadResult:
    files = {"train": "train_rand_split.jsonl", "dev": "dev_rand_split.jsonl"}
    if split not in files:
        raise ValueError(f"CommonsenseQA has splits {sorted(files)}, not {split!r}")
    path = _require_file(data_dir, f"commonsenseqa/{files[split]}")

    def make(number: int, obj: Any) -> Problem:
        question = obj["question"]
        choices = tuple((_text(c["label"], "label"), _text(c["text"], "text")) for c in question["choices"])
        labels = "".join(label for label, _ in choices)
        return Problem(id=f"commonsenseqa/{_text(obj['id'], 'id')}", dataset="commonsenseqa",
                       question=_text(question["stem"], "question.stem"),
                       gold=answers.canonical_choice(obj["answerKey"], labels), gold_raw=obj["answerKey"],
                       choices=choices, published_split=split)

    return _collect(_iter_jsonl(path), path, make, skip_bad)
