"""Several hosts: starting JAX's multi-controller runtime, who this host is, and barriers.

On a TPU pod slice every host runs the same program (SPMD); on one machine the tests start several
CPU processes. With one process every function here is a no-op or a constant.
"""

from __future__ import annotations

import os
from typing import Sequence


class DistributedError(ValueError):
    """A multi-host configuration that cannot start; the message says what to set."""


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, auto: bool = False) -> None:
    """Starts JAX's multi-controller runtime when more than one process is configured.

    Explicit arguments win; otherwise MMST_COORDINATOR / MMST_NUM_PROCESSES / MMST_PROCESS_ID are
    read. On a TPU VM slice `auto=True` lets JAX discover everything. One process: nothing to do.
    """
    import jax

    coordinator_address = coordinator_address or os.environ.get("MMST_COORDINATOR")
    num_processes = num_processes or int(os.environ.get("MMST_NUM_PROCESSES", "1"))
    if process_id is None and "MMST_PROCESS_ID" in os.environ:
        process_id = int(os.environ["MMST_PROCESS_ID"])
    if auto:
        jax.distributed.initialize()
        return
    if num_processes <= 1:
        return
    if not coordinator_address or process_id is None:
        raise DistributedError(f"{num_processes} processes configured but the coordinator address or "
                               "this process's id is missing: set both (or MMST_COORDINATOR and "
                               "MMST_PROCESS_ID)")
    # CPU processes (tests, simulations) need a collectives implementation; TPUs ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def host_info() -> tuple[int, int]:
    """(this host's index, the number of hosts)."""
    import jax

    return jax.process_index(), jax.process_count()


def barrier(name: str) -> None:
    """All hosts reach this point before any goes on (no-op on one host)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def on_every_host(flags: Sequence[bool]) -> list[bool]:
    """Each flag true only if it is true on every host (each passes its own list, all of one
    length); on one host the flags themselves."""
    import jax

    if jax.process_count() == 1 or not flags:
        return [bool(f) for f in flags]
    import numpy as np
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
    return [bool(f) for f in every.reshape(jax.process_count(), len(flags)).all(axis=0)]
