"""The verifier over sample records: text answers are extracted, code is run in the sandbox, and
every answer is compared with the gold outside the sandbox.

Public API:
  - ``verify_records(records, sandbox=None, limits=None, on_result=None, *,
    allow_unprotected=False) -> list[dict]``:
    verified records (docs/architecture.md) in the input order. Code samples run in ``sandbox`` (one is made
    and closed if none is given). ``on_result(index, verified)`` is called as each finishes.
  - ``verify_text(record) -> dict`` and ``verified_from_exec(record, result) -> dict``: one record.

A verified record is the sample's fields plus ``answer`` (normalised string or None),
``correct``, ``status`` (``ok`` | ``no_answer`` | ``error`` | ``timeout`` | ``memory`` |
``output_limit`` | ``rejected``), ``detail``, ``elapsed_ms`` and ``copied`` (the solution states
its answer without computing it, ``mmst_jax.verify.copies``; ``detail`` then says why, and the
record is kept out of training). A code record run by a sandbox allowed to lack protections
carries ``unprotected: true``. Only the program's code enters the sandbox; the gold never does.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from mmst_jax.verify.answers import answer_kind, answers_match, extract_answer, normalize_answer
from mmst_jax.verify.copies import copied_reason
from mmst_jax.verify.results import ExecResult, Limits
from mmst_jax.verify.sandbox import Sandbox


def _finish(record: dict, answer: str | None, status: str, detail: str, elapsed_ms: float) -> dict:
    kind = answer_kind(record["dataset"], record["gold"])
    correct = status == "ok" and answer is not None and answers_match(answer, record["gold"], kind)
    copied = copied_reason(record, kind)
    if copied and status == "ok":
        detail = copied
    return {**record, "answer": answer, "correct": bool(correct), "status": status,
            "detail": detail, "elapsed_ms": round(float(elapsed_ms), 3), "copied": copied is not None}


def verify_text(record: dict) -> dict:
    start = time.perf_counter()
    kind = answer_kind(record["dataset"], record["gold"])
    answer = extract_answer(record["completion"], kind)
    elapsed = (time.perf_counter() - start) * 1000.0
    if answer is None:
        return _finish(record, None, "no_answer", f"no {kind} answer found in the text", elapsed)
    return _finish(record, answer, "ok", "", elapsed)


def verified_from_exec(record: dict, result: ExecResult) -> dict:
    if result.status != "ok":
        return _finish(record, None, result.status, result.detail, result.elapsed_ms)
    kind = answer_kind(record["dataset"], record["gold"])
    answer = normalize_answer(result.value, kind)
    if answer is None:
        shown = repr(result.value)[:60]
        return _finish(record, None, "no_answer", f"solution() returned {shown}, not a {kind} answer",
                       result.elapsed_ms)
    return _finish(record, answer, "ok", "", result.elapsed_ms)


def verify_records(records: Sequence[dict], sandbox: Sandbox | None = None,
                   limits: Limits | None = None,
                   on_result: Callable[[int, dict], None] | None = None, *,
                   allow_unprotected: bool = False) -> list[dict]:
    out: list[dict | None] = [None] * len(records)

    def done(i: int, verified: dict) -> None:
        out[i] = verified
        if on_result:
            on_result(i, verified)

    code = []
    for i, record in enumerate(records):
        if record["method"] == "code":
            code.append(i)
        else:
            done(i, verify_text(record))
    if code:
        own = sandbox is None
        box = Sandbox(limits=limits, allow_unprotected=allow_unprotected) if own else sandbox
        mark = {"unprotected": True} if box.unprotected else {}
        try:
            box.run([records[i]["completion"] for i in code], limits=limits,
                    on_result=lambda j, result: done(code[j], {**verified_from_exec(records[code[j]], result),
                                                               **mark}))
        finally:
            if own:
                box.close()
    return out  # type: ignore[return-value]
