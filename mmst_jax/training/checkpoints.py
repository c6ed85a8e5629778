"""Training checkpoints: a thin wrapper over orbax's CheckpointManager.

    workdir/checkpoints/
      10/state/   the train state (step, params, optimizer state, RNG): an orbax PyTree, each host
                  writing its own shards
      10/meta/    JSON: the model's architecture, the data iterator's position, the step

Saves are asynchronous (the next training steps run while the files are written) and atomic: orbax
writes `N.orbax-checkpoint-tmp-*` and renames it to `N` only once every item is complete (on gs://,
which has no rename, it writes `N/` and commits it with `N/commit_success.txt` last), so an
interrupted save is never listed as a checkpoint. The directory may be local or gs://. Restoring takes the newest step that reads back;
one that does not (a damaged directory) is reported and the one before it is used. Restoring onto
another mesh works because the target's shardings, not the writer's, decide the layout.
"""

from __future__ import annotations

import logging
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# The fields that decide the shapes and meaning of the parameters; dtype and remat may differ.
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "n_layer", "n_head", "layer_norm_epsilon",
                       "apply_residual_connection_post_layernorm")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message says what to do."""


def architecture(model_config) -> dict[str, Any]:
    """The architecture fields of a BloomConfig (or of a dict of its fields)."""
    get = model_config.get if isinstance(model_config, dict) else lambda k: getattr(model_config, k)
    return {k: get(k) for k in ARCHITECTURE_FIELDS}


def _is_unfinished(path: epath.Path) -> bool:
    """An interrupted save: a temporary directory (local), or a step directory without its commit
    file (gs://, where orbax commits by writing `commit_success.txt` last)."""
    if ocp.path.step.TMP_DIR_SUFFIX in path.name:
        return True
    return path.name.isdigit() and not ocp.path.step.is_path_finalized(path)


class Checkpoints:
    """Checkpoints under `directory`: `should_save` every `save_every` steps (0: never), the newest
    `keep` kept.

    `save(step, state, meta)` returns at once when asynchronous; `wait()` blocks until written.
    Use as a context manager, or call `close()`, so the last save is finished before exit.
    """

    def __init__(self, directory: epath.PathLike, *, save_every: int = 0, keep: int = 3,
                 async_save: bool = True):
        if keep < 1:
            raise CheckpointError(f"keep={keep}: keep at least one checkpoint")
        self.directory = epath.Path(directory)
        self.save_every = save_every
        self.last_saved_step: int | None = None
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    # --- listing -----------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """The steps of complete checkpoints (interrupted saves are never among them), oldest first.
        Waits for a save in progress, then reads the directory."""
        self._manager.wait_until_finished()
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def unfinished(self) -> list[str]:
        """Names of interrupted saves (orbax's temporary directories) left in the directory."""
        if not self.directory.exists():
            return []
        return sorted(p.name for p in self.directory.iterdir() if _is_unfinished(p))

    # --- saving ------------------------------------------------------------------------------
    def should_save(self, step: int) -> bool:
        """True every `save_every` steps."""
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts writing `state` (a pytree of jax arrays) and `meta` (JSON-able) as step `step`."""
        meta = {"format_version": FORMAT_VERSION, "step": int(step), **meta}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._manager.save(int(step), args=args, force=True)
        self.last_saved_step = int(step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- restoring ---------------------------------------------------------------------------
    def read_meta(self, step: int) -> dict[str, Any]:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore(self, abstract_state: Any, model_config) -> tuple[int, Any, dict[str, Any]] | None:
        """Restores the newest readable checkpoint onto `abstract_state`'s shapes and shardings.

        Returns (step, state, meta), or None when the directory holds no checkpoint. A checkpoint
        of another architecture raises CheckpointError; a damaged one is reported (logged as a
        warning) and the previous one is tried; none readable raises CheckpointError.
        """
        for name in self.unfinished():
            log.warning("ignoring %s: an interrupted save, not a complete checkpoint", self.directory / name)
        steps = self.steps()
        failures = []
        for step in reversed(steps):
            try:
                meta = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - any unreadable file means a damaged step
                failures.append(self._damaged(step, e, steps, failures))
                continue
            self._check_architecture(step, meta, model_config)
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
            except Exception as e:  # noqa: BLE001
                failures.append(self._damaged(step, e, steps, failures))
                continue
            return step, restored["state"], meta
        if failures:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory}: steps {steps} are all damaged "
                f"({failures[0]}); delete them to start afresh, or restore the directory")
        return None

    def _damaged(self, step: int, error: Exception, steps: list[int], failures: list) -> str:
        older = [s for s in steps if s < step]
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        then = f"falling back to step {older[-1]}" if older else "no older checkpoint to fall back to"
        log.warning("checkpoint %s is damaged and cannot be restored (%s); %s",
                    self.directory / str(step), reason, then)
        return f"step {step}: {reason}"

    def _check_architecture(self, step: int, meta: dict[str, Any], model_config) -> None:
        theirs = meta.get("model")
        if not isinstance(theirs, dict):
            raise CheckpointError(f"checkpoint {self.directory / str(step)} does not record its model "
                                  "config: it was not written by this trainer")
        ours = architecture(model_config)
        diffs = [f"{k} {theirs.get(k)!r} there, {v!r} here" for k, v in ours.items() if theirs.get(k) != v]
        if diffs:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} was written for another model ({'; '.join(diffs)}); "
                "train this model in a fresh working directory, or configure the model the checkpoint was made for")


def model_meta(model_config) -> dict[str, Any]:
    """What a checkpoint records about its model: the architecture plus the dtypes."""
    return {**architecture(model_config), "dtype": model_config.dtype, "param_dtype": model_config.param_dtype}
