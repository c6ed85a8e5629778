"""The one answer comparator: extraction, normalisation and comparison of final answers.

Every stage that asks "is this the right answer?" — text samples, code results, translations,
majority votes, evaluation — goes through these functions, so they all agree.

Answer kinds:
  - ``number``: math word problems (GSM8K, SVAMP, MAWPS, ASDiv).
  - ``choice``: multiple choice, answers are letters ``A``-``E`` (CommonsenseQA, AQuA).
  - ``yesno``: ``yes`` / ``no`` (StrategyQA).

Public API:
  - ``extract_answer(text, kind="number") -> str | None``: the normalised final answer of a text
    completion, or None. Looks, in order, for the fixed answer sentence (``The answer is X.``,
    first occurrence), a ``#### X`` line, ``\\boxed{X}`` (last), and for numbers the last number.
  - ``normalize_answer(value, kind="number") -> str | None``: the canonical string of a raw answer
    (a string, int or float): thousands separators, currency, percent signs and unit words removed,
    fractions, mixed numbers and exponents (``1e6``, ``2.5 × 10^3``) evaluated, signs kept. A
    number's canonical string is exact and positional (``format_number``): ``9284017268534.4``,
    ``0.0000020107``, integral numbers without ``.0``; normalising it again gives it back.
  - ``answers_match(pred, gold, kind="number") -> bool``: numbers match by ``numbers_match``
    (the tolerances, stated once, below); other kinds match when their normalised strings are
    equal.
  - ``gold_answer(gold, kind)``: the normalised gold of a record's ``gold`` field as the dataset
    gives it (a GSM8K worked answer ending ``#### N``, a number, a letter, ``Yes``/``No``, a
    BIG-bench ``target_scores`` dict, a bool).
  - ``answer_kind(dataset, gold=None)``: the kind for a dataset name (inferred from the gold when
    the dataset is unknown).

bool, NaN and infinity are never numbers.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from fractions import Fraction
from typing import Any

# ---- comparison of numbers: every tolerance is here ---------------------------------------
# A prediction p matches a gold g when
#   - |p - g| <= NUMBER_ABS_TOL * min(1, |g|) + NUMBER_REL_TOL * |g|  (floating-point noise:
#     absolute 1e-4 for ordinary numbers, relative for tiny ones, and relative 1e-9 for large
#     ones, so that counts stay exact: 1000001 is not 1000000), or g == 0 and |p| <= NUMBER_ZERO_TOL;
#   - or g is written with limited precision (a fractional part and at least
#     ROUNDED_GOLD_MIN_DIGITS significant digits, e.g. 2.0107e-06 or 3.33333) and p, rounded to
#     g's last digit, is g.
NUMBER_ABS_TOL = 1e-4
NUMBER_REL_TOL = 1e-9
NUMBER_ZERO_TOL = 1e-9
ROUNDED_GOLD_MIN_DIGITS = 5
NUMBER_DIGITS = 15      # significant digits of a float's value (float64 round-trips 15)
MAX_EXPONENT = 400      # numbers past 10^±400 are not answers (and would print huge)
_EXACT = Context(prec=2 * MAX_EXPONENT + 40, Emax=4 * MAX_EXPONENT, Emin=-4 * MAX_EXPONENT)
KINDS = ("number", "choice", "yesno")
MAX_TEXT_CHARS = 100_000
CHOICE_LETTERS = "ABCDE"

DATASET_KINDS = {
    "gsm8k": "number", "svamp": "number", "mawps": "number", "addsub": "number",
    "multiarith": "number", "singleeq": "number", "singleop": "number", "asdiv": "number",
    "arith": "number", "synthetic_compare": "yesno", "synthetic": "number", "strategyqa": "yesno", "commonsenseqa": "choice", "aqua": "choice",
}

ANSWER_SENTENCE = "The answer is"
# Whitespace runs are bounded ({0,3}) everywhere: an unbounded \s* inside a pattern tried at every
# position makes a long run of spaces cost quadratic time.
_SENTENCE_RE = re.compile(r"\b(?:the\s{1,3})?(?:final\s{1,3})?answer\s{1,3}is\s{0,3}[:=]?\s{0,3}(.*)",
                          re.IGNORECASE)
_HASHES_RE = re.compile(r"####[ \t]{0,3}(.*)")
_BOXED_RE = re.compile(r"\\boxed\s{0,3}\{")

_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000, "million": 1000000, "half": 0.5,
}
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_SUPERSCRIPTS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b\u207a",
                              "0123456789-+")
# A signed number: optional sign and currency, digits (with thousands separators and decimals),
# optionally an exponent (1.5e-6, 2.5 x 10^3, 2.5 × 10**-3, 3·10⁶), optionally a fraction (3/4)
# or a mixed number (1 1/2).
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212]?)\s{0,3}(?:[$\u20ac\u00a3\u00a5]\s{0,3})?"
    r"(?P<whole>" + _DIGITS + r")"
    r"(?:[eE](?P<exp>[-+]?\d{1,4})(?!\w|\.\d)"
    r"|\s{0,3}[x\u00d7*\u00b7\u22c5]\s{0,3}10\s{0,3}(?:\^|\*\*)\s{0,3}(?P<pow>[-+\u2212]?\s{0,3}\d{1,4}|\([-+\u2212]?\d{1,4}\))"
    r"|\s{0,3}[x\u00d7*\u00b7\u22c5]\s{0,3}10(?P<sup>[\u207b\u207a]?[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]{1,4}))?"
    r"(?:\s{1,3}(?P<mnum>\d+)\s{0,3}/\s{0,3}(?P<mden>\d+)|\s{0,3}/\s{0,3}(?P<den>\d+(?:\.\d+)?))?"
    r"(?![\d])"
)
_WORD_RE = re.compile(r"\b(" + "|".join(sorted(_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_FRAC_RE = re.compile(r"\\[dt]?frac\s{0,3}\{([^{}]*)\}\s{0,3}\{([^{}]*)\}")
_YES = {"yes", "true", "correct", "y"}
_NO = {"no", "false", "incorrect", "n"}


def answer_kind(dataset: str | None, gold: Any = None) -> str:
    """The answer kind of a dataset; unknown datasets are inferred from the gold."""
    if dataset:
        key = str(dataset).lower().split("/")[0]
        for name, kind in DATASET_KINDS.items():
            if key == name or key.startswith(name):
                return kind
    if isinstance(gold, dict) or isinstance(gold, bool):
        return "yesno"
    if isinstance(gold, str):
        g = gold.strip()
        if g.lower() in _YES | _NO:
            return "yesno"
        if len(g) == 1 and g.upper() in CHOICE_LETTERS:
            return "choice"
    return "number"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {', '.join(KINDS)}")


def _decimal(q: Fraction) -> Decimal | None:
    """The exact decimal of a fraction whose denominator has only the factors 2 and 5, else the
    fraction rounded to NUMBER_DIGITS significant digits; None past the exponent cap."""
    n, d = q.numerator, q.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d == 1:
        m = max(twos, fives)
        value = Decimal(f"{n * 10**m // q.denominator}E-{m}")
    else:
        with localcontext(Context(prec=NUMBER_DIGITS, rounding=ROUND_HALF_EVEN)):
            value = Decimal(n) / Decimal(q.denominator)
    if value and abs(value.adjusted()) > MAX_EXPONENT:
        return None
    return value


def to_decimal(x: Any) -> Decimal | None:
    """The exact value of an int, a float (its NUMBER_DIGITS-significant-digit decimal, which every
    float written with at most that many digits round-trips to), a Fraction or a Decimal."""
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int):
        return Decimal(x) if x.bit_length() <= 3 * MAX_EXPONENT else None
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        d = Decimal(format(x, f".{NUMBER_DIGITS}g"))
        return d if not d or abs(d.adjusted()) <= MAX_EXPONENT else None
    if isinstance(x, Decimal):
        return _decimal(Fraction(x)) if x.is_finite() else None
    if isinstance(x, Fraction):
        return _decimal(x)
    return None


def format_number(x: float | int | Fraction | Decimal) -> str | None:
    """The canonical string of a number: positional notation (never an exponent), no trailing
    zeros, integral values without a point, exact for ints, decimals and terminating fractions
    (a float counts as its NUMBER_DIGITS-digit decimal). Parsing it gives it back unchanged."""
    d = to_decimal(x)
    if d is None:
        return None
    with localcontext(_EXACT):
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")


def _exponent(m: re.Match) -> int | None:
    e = m.group("exp") or m.group("pow") or m.group("sup")
    if e is None:
        return 0
    e = e.translate(_SUPERSCRIPTS).replace("\u2212", "-").strip("()").replace(" ", "")
    try:
        return int(e)
    except ValueError:
        return None


def _parse_number_match(m: re.Match) -> Fraction | None:
    whole = m.group("whole").replace(",", "")
    try:
        value = Fraction(whole)
        exponent = _exponent(m)
        if exponent is None or abs(exponent) > MAX_EXPONENT:
            return None
        value *= Fraction(10) ** exponent
        if m.group("mnum") is not None:
            den = Fraction(m.group("mden"))
            if den == 0:
                return None
            value = value + Fraction(m.group("mnum")) / den
        elif m.group("den") is not None:
            den = Fraction(m.group("den"))
            if den == 0:
                return None
            value = value / den
    except (ValueError, ZeroDivisionError):
        return None
    if m.group("sign") in ("-", "\u2212"):
        value = -value
    return value


def _numbers_in(text: str) -> list[Fraction]:
    out = []
    for m in _NUMBER_RE.finditer(text):
        v = _parse_number_match(m)
        if v is not None and to_decimal(v) is not None:
            out.append(v)
    return out


def numbers_in(text: str) -> list[str]:
    """The canonical strings of every number a text states, in digits or as a number word."""
    text = _FRAC_RE.sub(r"\1/\2", text[:MAX_TEXT_CHARS])
    found = [format_number(v) for v in _numbers_in(text)]
    found += [format_number(Fraction(_WORDS[m.group(1).lower()])) for m in _WORD_RE.finditer(text)]
    return [s for s in found if s is not None]


def answer_sentence_span(text: str) -> tuple[int, int] | None:
    """Where the first answer sentence (``The answer is X``, to the end of its line) is."""
    m = _SENTENCE_RE.search(text[:MAX_TEXT_CHARS])
    if m is None:
        return None
    end = text.find("\n", m.start())
    return m.start(), len(text) if end < 0 else end


def _word_number(text: str) -> Fraction | None:
    m = _WORD_RE.search(text)
    return Fraction(_WORDS[m.group(1).lower()]) if m else None


def parse_number(value: Any) -> Fraction | None:
    """The exact value of an int, float, Decimal, Fraction or text (the first number in it, else
    the first number word), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Fraction, Decimal)):
        d = to_decimal(value)
        return None if d is None else Fraction(d)
    if not isinstance(value, str):
        return None
    value = value[:MAX_TEXT_CHARS]
    value = _FRAC_RE.sub(r"\1/\2", value)
    numbers = _numbers_in(value)
    if numbers:
        return numbers[0]
    return _word_number(value)


def _parse_choice(text: str) -> str | None:
    t = text.strip()
    m = re.search(r"\(([A-Ea-e])\)", t) or re.match(r"([A-E])(?:\)|\.|:|\s|$)", t) \
        or re.match(r"(?:option|choice)\s{1,3}([A-Ea-e])\b", t, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    if len(t) == 1 and t.upper() in CHOICE_LETTERS:
        return t.upper()
    return None


def _parse_yesno(text: str) -> str | None:
    m = re.search(r"[A-Za-z]+", text)
    if not m:
        return None
    word = m.group(0).lower()
    if word in _YES:
        return "yes"
    if word in _NO:
        return "no"
    return None


def normalize_answer(value: Any, kind: str = "number") -> str | None:
    """Canonical string of a raw answer of the given kind, or None when it has none."""
    _check_kind(kind)
    if value is None or isinstance(value, bool) and kind == "number":
        return None
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return normalize_answer(value[0], kind)
        return None
    if kind == "number":
        f = parse_number(value)
        return None if f is None else format_number(f)
    if isinstance(value, bool):
        return ("yes" if value else "no") if kind == "yesno" else None
    if not isinstance(value, str):
        return None
    return _parse_choice(value) if kind == "choice" else _parse_yesno(value)


def _boxed_contents(text: str, most: int = 8) -> list[str]:
    """Contents of the last `most` balanced \\boxed{...}, last first (each scan is linear, and
    there are at most `most` of them)."""
    out = []
    for m in reversed(list(_BOXED_RE.finditer(text))[-most:]):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1])
    return out


def _first_line(s: str) -> str:
    return s.strip().split("\n", 1)[0]


def extract_answer(text: str | None, kind: str = "number") -> str | None:
    """The normalised final answer of a text completion, or None when none is found. Only the
    first MAX_TEXT_CHARS characters are read."""
    _check_kind(kind)
    if not text:
        return None
    text = text[:MAX_TEXT_CHARS]
    m = _SENTENCE_RE.search(text)
    if m:
        # "The answer is 15 * 8 = 120 pints." -> the value after the last '='.
        sentence = re.split(r"\.(?:\s|$)", _first_line(m.group(1)), maxsplit=1)[0]
        found = normalize_answer(sentence.rsplit("=", 1)[-1], kind)
        if found is not None:
            return found
    m = _HASHES_RE.search(text)
    if m:
        found = normalize_answer(_first_line(m.group(1)), kind)
        if found is not None:
            return found
    for content in _boxed_contents(text):
        found = normalize_answer(content, kind)
        if found is not None:
            return found
    if kind == "number":
        numbers = _numbers_in(text)
        return format_number(numbers[-1]) if numbers else None
    return None


def gold_answer(gold: Any, kind: str) -> str | None:
    """The normalised gold answer from a record's ``gold`` as the dataset gives it."""
    _check_kind(kind)
    if isinstance(gold, dict):  # BIG-bench target_scores {"Yes": 1, "No": 0}
        best = [k for k, v in gold.items() if v and not isinstance(v, (dict, list))]
        return normalize_answer(best[0], kind) if len(best) == 1 else None
    if isinstance(gold, str) and "####" in gold:
        return normalize_answer(_first_line(gold.rsplit("####", 1)[1]), kind)
    return normalize_answer(gold, kind)


def numbers_match(pred: str, gold: str) -> bool:
    """Whether two canonical number strings match (the rule at the top of this module)."""
    with localcontext(_EXACT):
        return _decimals_match(Decimal(pred), Decimal(gold))


def _decimals_match(p: Decimal, g: Decimal) -> bool:
    if p == g:
        return True
    if g == 0:
        return abs(p) <= Decimal(repr(NUMBER_ZERO_TOL))
    tol = Decimal(repr(NUMBER_ABS_TOL)) * min(Decimal(1), abs(g)) + Decimal(repr(NUMBER_REL_TOL)) * abs(g)
    if abs(p - g) <= tol:
        return True
    _, digits, exponent = g.as_tuple()
    if exponent < 0 and len(digits) >= ROUNDED_GOLD_MIN_DIGITS:
        step = Decimal((0, (1,), exponent))
        return any(p.quantize(step, rounding=r) == g for r in (ROUND_HALF_UP, ROUND_HALF_EVEN))
    return False


def answers_match(pred: Any, gold: Any, kind: str = "number") -> bool:
    """Whether a predicted answer equals the gold answer (both raw or normalised)."""
    _check_kind(kind)
    p = normalize_answer(pred, kind)
    g = gold_answer(gold, kind)
    if p is None or g is None:
        return False
    if kind == "number":
        return numbers_match(p, g)
    return p == g
