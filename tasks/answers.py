"""Gold answers in canonical form, and the one answer sentence the text method ends with.

Canonical forms (strings, so that every dataset's gold compares the same way):
- numbers: no thousands separators, no trailing zeros, integers without a point:
  `1,450,000` -> `1450000`, `43.0` -> `43`, `0.50` -> `0.5`, `-7` -> `-7`;
- multiple-choice letters: one upper-case letter, `(c)` -> `C`;
- yes/no: `yes` or `no`.

Comparing model answers with golds (tolerances, units, extraction from free text) is the verifier's
(`mmst_jax.verify.answers`); `same_answer` here only routes to it.
"""

from __future__ import annotations

import decimal
import math
import re

ANSWER_SENTENCE = "The answer is {}."
_ANSWER_SENTENCE_RE = re.compile(r"The answer is (.+?)\.\s*$")
_NUMBER_RE = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)$")


class AnswerError(ValueError):
    """A gold answer that cannot be put in canonical form."""


def canonical_number(value: int | float | str) -> str:
    """A number as a canonical string; raises AnswerError for anything that is not one number."""
    if isinstance(value, bool):
        raise AnswerError(f"not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnswerError(f"not a finite number: {value!r}")
        text = repr(value)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().replace("$", "").strip()
        if not _NUMBER_RE.match(text):
            raise AnswerError(f"not a number: {value!r}")
        text = text.replace(",", "")
    else:
        raise AnswerError(f"not a number: {value!r}")
    d = decimal.Decimal(text)
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def canonical_choice(value: str, labels: str = "ABCDE") -> str:
    """A multiple-choice letter: `A`, `(b)`, `C)` -> `A`, `B`, `C`."""
    letter = str(value).strip().strip("()").strip().upper()
    if len(letter) != 1 or letter not in labels:
        raise AnswerError(f"not a choice among {labels}: {value!r}")
    return letter


def canonical_yes_no(value: str | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    word = str(value).strip().rstrip(".").lower()
    if word not in ("yes", "no"):
        raise AnswerError(f"not yes/no: {value!r}")
    return word


def answer_sentence(answer: str) -> str:
    """The fixed sentence every text solution ends with: `The answer is 72.`"""
    return ANSWER_SENTENCE.format(answer)


def final_answer_of_text(text: str) -> str | None:
    """The answer stated by a text solution's closing answer sentence, or None if it has none."""
    match = _ANSWER_SENTENCE_RE.search(text.strip())
    return match.group(1).strip() if match else None


def same_answer(answer: object, gold: str) -> bool:
    """Whether an answer (a program's return value or a stated answer) equals a canonical gold,
    by the verifier's one comparator (`mmst_jax.verify.answers.answers_match`)."""
    from mmst_jax.verify.answers import answers_match

    if gold in ("yes", "no"):
        kind = "yesno"
    elif _NUMBER_RE.match(gold):
        kind = "number"
    else:
        kind = "choice"
    return answers_match(answer, gold, kind)
