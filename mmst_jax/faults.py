"""Named fault points, so that tests can kill or crash a run at an exact place.

The stages call `point(name)` where a fault is worth simulating. Nothing happens unless the
environment variable `MMST_FAULTS` names that point:

    MMST_FAULTS="sample.batch@3=kill"         SIGKILL this process at the 3rd batch sampled
    MMST_FAULTS="verify.record@5=crash"       raise InjectedFault at the 5th verified record
    MMST_FAULTS="verify.record@5+=crash"      ... and at every one after it (a verifier that keeps failing)

Several faults are separated by commas. Counts are per process. Points: `sample.batch`,
`verify.record`, `train.step` (after an optimizer step; at a checkpoint step the checkpoint is
being written), `export` (after the fine-tuned model is written, before its marker), `stage.done`
(before any stage marker is written).
"""

from __future__ import annotations

import collections
import os
import signal

ENV = "MMST_FAULTS"
_counts: collections.Counter = collections.Counter()


class InjectedFault(RuntimeError):
    """A crash asked for by MMST_FAULTS."""


def _parse(spec: str) -> list[tuple[str, int, bool, str]]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            where, action = item.split("=")
            name, at = where.split("@")
            repeat = at.endswith("+")
            faults.append((name, int(at.rstrip("+")), repeat, action))
        except ValueError:
            raise ValueError(f"{ENV}: cannot read {item!r}; write NAME@N=kill or NAME@N[+]=crash") from None
        if action not in ("kill", "crash"):
            raise ValueError(f"{ENV}: unknown action {action!r} in {item!r}; use kill or crash")
    return faults


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _counts[name] += 1
    n = _counts[name]
    for fault_name, at, repeat, action in _parse(spec):
        if fault_name == name and (n == at or (repeat and n >= at)):
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault at {name} #{n}")
