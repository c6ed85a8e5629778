"""Copied answers: solutions that state the answer instead of computing it.

A translation prompt shows the source solution, which ends with its answer, and a model can copy
that answer instead of translating the method; a sampled program can return a bare literal too.
Such a solution is verified correct, but as a training example it teaches copying. The rule:

  - code: ``solution()`` is copied when every value it returns is a literal (a number or a
    string, optionally signed) or a name whose every binding in the program is such a literal,
    through any chain of plain assignments (``x = 42; y = x; return y``). Any operation, call,
    subscript, loop, augmented assignment, parameter or import on the way counts as computing.
  - text (translations only; a sampled text never saw its answer): copied when, apart from the
    answer sentence, it states no number other than the answer: no intermediate step.

Public API:
  - ``copied_code(program) -> str | None``: why the program is copied (``"solution() returns the
    literal 42"``), or None when it computes its value (or cannot be parsed).
  - ``copied_text(text, kind) -> str | None``: the same for a text translation.
  - ``copied_reason(record) -> str | None``: for a sample record (code, or a text translation,
    which carries ``source_method``).
  - ``constant_code_examples(run_dir) -> list[dict]``: code training examples (source ``self`` or
    ``translation``) in a run's ``round_*/train/code`` files that return a constant; ``python -m
    mmst_jax.verify.copies RUN_DIR`` prints them and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import json
import sys
from typing import Any

from mmst_jax.verify.answers import MAX_TEXT_CHARS, answer_sentence_span, extract_answer, numbers_in

MAX_PROGRAM_CHARS = 256 * 1024
_UNKNOWN = object()  # a binding that computes


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression (a number or string, optionally signed), else _UNKNOWN."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, complex, str):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _literal(node.operand)
        if type(inner) in (int, float, complex):
            return -inner if isinstance(node.op, ast.USub) else inner
    return _UNKNOWN


def _bindings(tree: ast.AST) -> dict[str, list[ast.AST | None]]:
    """Every binding of every name anywhere in the program: the assigned expression for a plain
    `name = expr`, None for any other kind of binding (loops, augmented assignments, imports,
    parameters, with, del, comprehensions, unpacking)."""
    found: dict[str, list[ast.AST | None]] = {}
    plain: set[int] = set()  # the targets of plain assignments, already counted

    def add(name: str, value: ast.AST | None) -> None:
        found.setdefault(name, []).append(value)

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and node.value is not None:
                    add(target.id, node.value)
                    plain.add(id(target))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(node.name, None)
            if not isinstance(node, ast.ClassDef):
                for arg in ast.walk(node.args):
                    if isinstance(arg, ast.arg):
                        add(arg.arg, None)
        elif isinstance(node, ast.Lambda):
            for arg in ast.walk(node.args):
                if isinstance(arg, ast.arg):
                    add(arg.arg, None)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                add((alias.asname or alias.name).split(".")[0], None)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in plain:
            add(node.id, None)  # loop targets, augmented assignments, del, with ... as, except
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                add(name, None)
    return found


def _constant(node: ast.AST, bindings: dict, seen: frozenset = frozenset()) -> Any:
    """The constant an expression always has (through chains of plain assignments), or _UNKNOWN."""
    value = _literal(node)
    if value is not _UNKNOWN or not isinstance(node, ast.Name):
        return value
    sources = bindings.get(node.id)
    if not sources or node.id in seen:  # a builtin, an undefined name, or a cycle
        return _UNKNOWN
    values = [_UNKNOWN if s is None else _constant(s, bindings, seen | {node.id}) for s in sources]
    return _UNKNOWN if any(v is _UNKNOWN for v in values) else values[-1]


def _solution(tree: ast.Module) -> ast.AST | None:
    """The last top-level definition of solution: a def, or `solution = lambda: ...`."""
    found = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "solution":
            found = node
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "solution"
                                                  for t in node.targets):
            found = node.value if isinstance(node.value, ast.Lambda) else None
    return found


def _returns(fn: ast.AST) -> list[ast.AST | None]:
    """The returned expressions of a function (None for a bare return), not those of functions
    nested in it; a lambda returns its body."""
    if isinstance(fn, ast.Lambda):
        return [fn.body]
    out, todo = [], list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Return):
            out.append(node.value)
        todo.extend(ast.iter_child_nodes(node))
    return out


def copied_code(program: str) -> str | None:
    """Why the program's solution() is copied, or None when it computes what it returns."""
    if not isinstance(program, str) or len(program) > MAX_PROGRAM_CHARS:
        return None
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    fn = _solution(tree)
    if fn is None:
        return None
    returned = [r for r in _returns(fn) if r is not None and not (isinstance(r, ast.Constant) and r.value is None)]
    if not returned:
        return None
    bindings = _bindings(tree)
    values = []
    for node in returned:
        value = _constant(node, bindings)
        if value is _UNKNOWN:
            return None
        values.append(value)
    shown = ", ".join(dict.fromkeys(repr(v)[:40] for v in values))
    how = "the literal" if all(_literal(n) is not _UNKNOWN for n in returned) else "a name bound only to the literal"
    return f"copied: solution() returns {how} {shown} without computing it"


def copied_text(text: str, kind: str = "number") -> str | None:
    """Why a text solution is copied (it states its answer with no number other than the answer
    anywhere else: no intermediate step), or None. Only number answers are judged."""
    if kind != "number" or not isinstance(text, str):
        return None
    text = text[:MAX_TEXT_CHARS]
    answer = extract_answer(text, kind)
    if answer is None:
        return None
    span = answer_sentence_span(text)
    rest = text[:span[0]] + text[span[1]:] if span else text
    if set(numbers_in(rest)) - {answer}:
        return None
    return f"copied: states the answer {answer} with no intermediate step"


def copied_reason(record: dict, kind: str = "number") -> str | None:
    """Why a sample record's solution is copied, or None: every program is judged, and a text
    only when it is a translation (it has a `source_method`)."""
    completion = record.get("completion")
    if record.get("method") == "code":
        return copied_code(completion)
    if record.get("method") == "text" and record.get("source_method"):
        return copied_text(completion, kind)
    return None


def constant_code_examples(run_dir: str) -> list[dict]:
    """The code training examples with source self or translation, in every round's
    `train/code/part-*.jsonl` of a run directory, whose solution() returns a constant."""
    from etils import epath

    from mmst_jax.records import read_parts

    found = []
    for train in sorted(epath.Path(run_dir).glob("round_*/train/code")):
        for r in read_parts(train):
            if r.get("source") in ("self", "translation"):
                why = copied_code(r["completion"])
                if why:
                    found.append({"file": str(train), "problem_id": r["problem_id"], "source": r["source"],
                                  "round": r.get("round"), "why": why})
    return found


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mmst_jax.verify.copies RUN_DIR", file=sys.stderr)
        return 2
    found = constant_code_examples(argv[0])
    for f in found:
        print(json.dumps(f))
    print(f"{len(found)} code training example(s) with source self or translation return a constant",
          file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
