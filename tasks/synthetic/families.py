"""Problem families of the synthetic arithmetic world.

A family is a function `(rng, digits, steps) -> Instance`: a short word problem, its integer answer,
and a reference solution in each method. `digits` is the number size (operands have that many
digits) and `steps` the number of operations. Text solutions are one line of `a op b = c.` steps
ending in the answer sentence; programs define `solution()` with no blank line.

Families come in three kinds (see tasks/synthetic/__init__.py for why):
- code-favoured, big exact arithmetic: `shopping` (sums of products), `savings` (chains of + and -);
- text-favoured, small numbers but constructs that are rare in programs: `sequence` (list indexing),
  `clock` (arithmetic modulo 12 in a loop), `frog` (a simulation loop);
- shared: `change` (small money problems that both methods solve the same plain way).

One related family, `compare`, is a yes/no question that needs the same arithmetic as `shopping`
and `savings` followed by a comparison; a world holds it only when asked (`world_splits(related=)`)
and a run evaluates it in text, as the paper evaluates StrategyQA, without sampling it for training.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable

from tasks.answers import answer_sentence

NAMES = ("Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Leo")
ITEMS = ("pens", "books", "cups", "bags", "hats", "lamps", "boxes", "toys", "maps", "kites")
THINGS = ("coins", "stamps", "shells", "cards", "beads", "marbles")


@dataclasses.dataclass(frozen=True)
class Instance:
    question: str
    answer: int | str  # an integer; `yes` or `no` for the related family
    text: str  # ends with the answer sentence
    code: str  # defines solution(), ends with a newline


def number(rng: random.Random, digits: int) -> int:
    """A number with exactly `digits` digits (one-digit numbers are 2..9)."""
    if digits <= 1:
        return rng.randint(2, 9)
    return rng.randint(10 ** (digits - 1), 10 ** digits - 1)


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _program(lines: list[str]) -> str:
    return "def solution():\n" + "".join(f"    {line}\n" for line in lines)


def shopping(rng: random.Random, digits: int, steps: int) -> Instance:
    name = rng.choice(NAMES)
    items = rng.sample(ITEMS, steps)
    orders = [(number(rng, max(1, digits - 1)), number(rng, digits), item) for item in items]
    question = (f"{name} buys " + _listing([f"{n} {item} for {p} dollars each" for n, p, item in orders])
                + f". How many dollars does {name} pay?")
    products = [n * p for n, p, _ in orders]
    steps_text = [f"{n} * {p} = {n * p}." for n, p, _ in orders]
    total = products[0]
    for value in products[1:]:
        steps_text.append(f"{total} + {value} = {total + value}.")
        total += value
    lines = [f"total = {orders[0][0]} * {orders[0][1]}"]
    lines += [f"total += {n} * {p}" for n, p, _ in orders[1:]] + ["return total"]
    return Instance(question, total, " ".join(steps_text + [answer_sentence(total)]), _program(lines))


def savings(rng: random.Random, digits: int, steps: int) -> Instance:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    value = number(rng, digits + 1)
    changes = []
    for _ in range(steps):
        amount = number(rng, digits)
        sign = "-" if amount < value and rng.random() < 0.5 else "+"
        changes.append((sign, amount))
        value = value - amount if sign == "-" else value + amount
    start = value
    for sign, amount in reversed(changes):
        start = start + amount if sign == "-" else start - amount
    verbs = [f"{'loses' if sign == '-' else 'gets'} {amount}" for sign, amount in changes]
    question = f"{name} has {start} {thing}. {name} " + _listing(verbs) + f" {thing}. How many {thing} does {name} have now?"
    text, lines, current = _gains_and_losses(thing, start, changes)
    lines.append(f"return {thing}")
    return Instance(question, current, " ".join(text + [answer_sentence(current)]), _program(lines))


def _gains_and_losses(thing: str, start: int, changes: list[tuple[str, int]]) -> tuple[list[str], list[str], int]:
    """The text steps and program lines of `start` changed by each (sign, amount), and the result."""
    text, lines, current = [], [f"{thing} = {start}"], start
    for sign, amount in changes:
        new = current - amount if sign == "-" else current + amount
        text.append(f"{current} {sign} {amount} = {new}.")
        lines.append(f"{thing} {sign}= {amount}")
        current = new
    return text, lines, current


def sequence(rng: random.Random, digits: int, steps: int) -> Instance:
    step, first = number(rng, digits), rng.randint(1, 60)
    numbers = [first + i * step for i in range(4)]
    shown = ", ".join(map(str, numbers))
    where = "next" if steps == 1 else f"{steps} places after {numbers[-1]}"
    question = f"The numbers go {shown}. What number comes {where}?"
    text, current = [f"Each number is {step} more than the one before."], numbers[-1]
    for _ in range(steps):
        text.append(f"{current} + {step} = {current + step}.")
        current += step
    lines = [f"numbers = [{shown}]", "step = numbers[1] - numbers[0]",
             "return numbers[-1] + step" if steps == 1 else f"return numbers[-1] + {steps} * step"]
    return Instance(question, current, " ".join(text + [answer_sentence(current)]), _program(lines))


def clock(rng: random.Random, digits: int, steps: int) -> Instance:
    del digits  # hours on a clock face are always small
    hour = rng.randint(1, 12)
    jumps = [rng.randint(1, 11) for _ in range(steps)]
    later = _listing([f"{jumps[0]} hours later"] + [f"{j} hours after that" for j in jumps[1:]])
    question = f"A clock shows {hour} o'clock. What hour does it show {later}?"
    text, current = [], hour
    for jump in jumps:
        total = current + jump
        if total > 12:
            text.append(f"{current} + {jump} = {total}, and {total} - 12 = {total - 12}.")
            total -= 12
        else:
            text.append(f"{current} + {jump} = {total}.")
        current = total
    lines = [f"hour = {hour}", f"for hours in [{', '.join(map(str, jumps))}]:",
             "    hour = (hour + hours - 1) % 12 + 1", "return hour"]
    return Instance(question, current, " ".join(text + [answer_sentence(current)]), _program(lines))


def frog(rng: random.Random, digits: int, steps: int) -> Instance:
    minutes, back = number(rng, 1), number(rng, digits)
    forward = back + number(rng, digits)
    question = (f"A frog starts at 0. Every minute it jumps {forward} steps forward and {back} steps back. "
                f"Where is it after {minutes} minutes?")
    moves = [("+", forward), ("-", back)]
    if steps > 1:
        extra = number(rng, digits)
        moves.append(("+", extra))
        question = question.replace(f"{back} steps back", f"{back} steps back and {extra} steps forward")
    per_minute = forward - back + (moves[2][1] if steps > 1 else 0)
    move_text = f"{forward} - {back}" + (f" + {moves[2][1]}" if steps > 1 else "")
    text = [f"Each minute it moves {move_text} = {per_minute} steps.",
            f"After {minutes} minutes it is at {minutes} * {per_minute} = {minutes * per_minute}."]
    lines = ["position = 0", f"for minute in range({minutes}):"]
    lines += [f"    position {sign}= {value}" for sign, value in moves] + ["return position"]
    answer = minutes * per_minute
    return Instance(question, answer, " ".join(text + [answer_sentence(answer)]), _program(lines))


def change(rng: random.Random, digits: int, steps: int) -> Instance:
    name = rng.choice(NAMES)
    items = rng.sample(ITEMS, steps)
    orders = [(number(rng, 1), number(rng, digits), item) for item in items]
    cost = sum(n * p for n, p, _ in orders)
    money = cost + number(rng, digits)
    question = (f"{name} has {money} dollars and buys "
                + _listing([f"{n} {item} for {p} dollars each" for n, p, item in orders])
                + f". How many dollars does {name} have left?")
    text, current, lines = [], money, [f"money = {money}"]
    for n, p, _ in orders:
        text.append(f"{n} * {p} = {n * p}. {current} - {n * p} = {current - n * p}.")
        lines.append(f"money -= {n} * {p}")
        current -= n * p
    lines.append("return money")
    return Instance(question, current, " ".join(text + [answer_sentence(current)]), _program(lines))


def compare(rng: random.Random, digits: int, steps: int) -> Instance:
    """Yes/no: after buying (products, like `shopping`) or gaining and losing (like `savings`), is
    one amount more than another? The other amount is close to the first, so guessing is 50/50."""
    name, other = rng.sample(NAMES, 2)
    if rng.random() < 0.5:
        items = rng.sample(ITEMS, steps)
        orders = [(number(rng, 1), number(rng, digits), item) for item in items]
        total = sum(n * p for n, p, _ in orders)
        money = max(1, total + rng.choice([-1, 1]) * rng.randint(1, max(2, total // 4)))
        question = (f"{name} has {money} dollars and wants to buy "
                    + _listing([f"{n} {item} for {p} dollars each" for n, p, item in orders])
                    + f". Does it cost more than {money} dollars?")
        text, lines, current = [], [], None
        for n, p, _ in orders:
            text.append(f"{n} * {p} = {n * p}.")
            if current is not None:
                text.append(f"{current} + {n * p} = {current + n * p}.")
            current = n * p if current is None else current + n * p
        lines = [f"cost = {orders[0][0]} * {orders[0][1]}"] + [f"cost += {n} * {p}" for n, p, _ in orders[1:]]
        answer = "yes" if total > money else "no"
        text.append(f"{total} is {'more' if total > money else 'less'} than {money}.")
        lines.append(f"return 'yes' if cost > {money} else 'no'")
    else:
        thing = rng.choice(THINGS)
        start, value = number(rng, digits), None
        changes, value = [], start
        for _ in range(steps):
            amount = number(rng, 1)
            sign = "-" if amount < value and rng.random() < 0.5 else "+"
            changes.append((sign, amount))
            value = value - amount if sign == "-" else value + amount
        threshold = max(1, value + rng.choice([-1, 1]) * rng.randint(1, 3))
        threshold = threshold if threshold != value else value + 1
        verbs = [f"{'loses' if sign == '-' else 'gets'} {amount}" for sign, amount in changes]
        question = (f"{name} has {start} {thing}. {name} " + _listing(verbs) + f" {thing}. {other} has "
                    f"{threshold} {thing}. Does {name} have more {thing} than {other} now?")
        text, lines, _ = _gains_and_losses(thing, start, changes)
        answer = "yes" if value > threshold else "no"
        text.append(f"{value} is {'more' if value > threshold else 'less'} than {threshold}.")
        lines.append(f"return 'yes' if {thing} > {threshold} else 'no'")
    return Instance(question, answer, " ".join(text + [answer_sentence(answer)]), _program(lines))


FamilyFn = Callable[[random.Random, int, int], Instance]
FAMILY_FUNCTIONS: dict[str, FamilyFn] = {
    "shopping": shopping, "savings": savings, "sequence": sequence, "clock": clock, "frog": frog,
    "change": change, "compare": compare,
}
