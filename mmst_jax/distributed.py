"""Several hosts: starting JAX's multi-controller runtime, who this host is, barriers, and
failures that reach every host.

On a TPU pod slice every host runs the same program (SPMD); on one machine the tests start several
CPU processes. With one process every function here is a no-op or a constant.

A failure on one host must not leave the others waiting at a barrier (or in a collective) until the
coordinator's heartbeat gives up: `report_failure` posts the host's message in the coordinator's
key-value store, and every host runs a watcher (started by `initialize_distributed`) that sees it
within a second and ends its process with that message and a non-zero status.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import Sequence

log = logging.getLogger(__name__)

FAILURE_KEY = "mmst/failure"
POLL_S = 0.25
LOST_AFTER_S = 5.0  # a coordinator unreachable this long has gone (its host ended)


class DistributedError(ValueError):
    """A multi-host configuration that cannot start; the message says what to set."""


def simulate_cpu_devices(count: int) -> None:
    """Makes this process's CPU `count` JAX devices (a slice's mesh rehearsed on one machine). Must
    run before JAX starts its backends, and before `initialize_distributed`."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise DistributedError(f"JAX started its devices before {count} simulated devices could be set up: "
                               "ask for them in a fresh process, before anything runs on JAX")
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", count)


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
        watch_for_failures()
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
    watch_for_failures()


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


# --------------------------------------------------------------------------------------------
# Failures that reach every host
# --------------------------------------------------------------------------------------------
def _client():
    """The coordinator's key-value client, or None outside a multi-host run."""
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state.client


def end_process(message: str) -> None:
    """Prints `message` and ends this process with status 1 at once."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    logging.shutdown()
    os._exit(1)  # not sys.exit: jax.distributed's exit barrier would wait for the hosts that failed


def report_failure(message: str) -> bool:
    """Tells every host that this one failed with `message`; False outside a multi-host run. The
    first failure posted is the one every host reports."""
    client = _client()
    if client is None:
        return False
    import jax

    try:
        client.key_value_set(FAILURE_KEY, f"host {jax.process_index()}: {message}")
    except Exception:  # noqa: BLE001 — another host's failure is posted already
        pass
    time.sleep(4 * POLL_S)  # the coordinator may live in this process: let the others read it
    return True


def watch_for_failures(poll_s: float = POLL_S) -> threading.Thread | None:
    """Starts a daemon thread that ends this process when another host reports a failure, or when
    the coordinator stays unreachable (its host ended) for LOST_AFTER_S."""
    client = _client()
    if client is None:
        return None
    import jax

    me = f"host {jax.process_index()}:"
    stop = threading.Event()
    # Runs before jax.distributed's own exit handler (registered earlier): a host that finished
    # stops watching before the runtime shuts down.
    atexit.register(stop.set)

    def watch():
        unreachable_since = None
        while not stop.is_set():
            try:
                value = client.key_value_try_get(FAILURE_KEY)
                unreachable_since = None
            except Exception as e:  # noqa: BLE001 — NOT_FOUND until a host fails
                value = None
                if "NOT_FOUND" not in str(e) and "not found" not in str(e).lower():
                    unreachable_since = unreachable_since or time.monotonic()
                    if time.monotonic() - unreachable_since > LOST_AFTER_S and not stop.is_set():
                        end_process(f"mmst: the coordinator is unreachable (its host ended?): {e}")
            if value and not value.startswith(me) and not stop.is_set():
                end_process(f"mmst: stopping, another host failed: {value}")
            stop.wait(poll_s)

    thread = threading.Thread(target=watch, name="mmst-failure-watch", daemon=True)
    thread.start()
    return thread
