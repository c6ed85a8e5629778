"""The `mmst` command: `mmst SUBCOMMAND [--gin_file=F ...] [--gin.NAME=VALUE ...] [flags]`.

Gin is parsed here, at the edge, and nowhere else. Each subcommand lives in its own module of
this package as a `main(argv) -> int` that receives the arguments left over once the gin flags are
taken out; the modules are imported only when their subcommand runs, so `mmst verify` never
imports JAX. Gin registrations live in `configurables.py`. `mmst study` runs one config many
times: it receives the gin flags too, and parses them again here (`parse_gin`) for each run,
with that run's bindings after them.

Subcommands that read SeqIO tasks first import the module that registers them, as t5x does:
`MIXTURE_OR_TASK_MODULE` (`--gin.MIXTURE_OR_TASK_MODULE="'my_tasks'"`, default `tasks`), before the
gin files are parsed, so they can bind its configurables (`tasks.data_dir.path`, ...).

Gin files are looked up as given, then under the project's `gin_configs/` and `gin_configs/runs/`,
so `--gin_file=smoke.gin`, `--gin_file=runs/smoke.gin` and `--gin_file=gin_configs/runs/smoke.gin`
all work from the project root.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import pathlib
import sys
from typing import Sequence

GIN_CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin_configs"

DEFAULT_TASK_MODULE = "tasks"
# Subcommands that read SeqIO tasks (and so import the task module before parsing gin).
TASK_SUBCOMMANDS = ("run", "eval", "sample", "train", "tasks", "plan", "study")
# Subcommands that parse the gin flags again for each of their runs, and so receive them.
REPARSING_SUBCOMMANDS = ("study",)
# subcommand -> (module, one-line help). Each module defines `main(argv: Sequence[str]) -> int`.
SUBCOMMANDS = {
    "run": ("mmst_jax.cli.run", "run or resume MMST rounds: sample, verify, translate, build, fine-tune, evaluate"),
    "eval": ("mmst_jax.cli.eval", "evaluate any checkpoint on any tasks (accuracy, maj@k, overlap)"),
    "verify": ("mmst_jax.cli.verify", "verify sample records: extract answers, run code in the sandbox"),
    "train": ("mmst_jax.cli.train", "fine-tune BLOOM on a SeqIO task or mixture, or a JSONL of {inputs, targets}"),
    "sample": ("mmst_jax.cli.sample", "sample completions for prompts and write sample records"),
    "convert": ("mmst_jax.cli.convert", "convert BLOOM checkpoints between HF safetensors and orbax"),
    "tasks": ("mmst_jax.cli.tasks", "list the registered SeqIO tasks and render an example"),
    "plan": ("mmst_jax.cli.plan", "compile a run's programs for its slice: memory per device, a round's cost"),
    "study": ("mmst_jax.cli.study", "run every mode of a study over seeds; study.json and study.html with the claims"),
}


class UsageError(Exception):
    """A command line that cannot be run; the message says what to change."""


def split_gin_flags(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Separates `--gin_file=F` and `--gin.NAME=VALUE` from the other arguments.

    Returns (gin_files, gin_bindings, rest). Both `--flag=value` and `--flag value` are accepted.
    """
    gin_files, bindings, rest = [], [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--gin_file" or arg.startswith("--gin_file="):
            if arg == "--gin_file":
                if i + 1 >= len(args):
                    raise UsageError("--gin_file needs a value: --gin_file=path/to/config.gin")
                i += 1
                gin_files.append(args[i])
            else:
                gin_files.append(arg.split("=", 1)[1])
        elif arg.startswith("--gin."):
            body = arg[len("--gin."):]
            if "=" in body:
                name, value = body.split("=", 1)
            elif i + 1 < len(args):
                name, value = body, args[i + 1]
                i += 1
            else:
                raise UsageError(f"{arg} needs a value: --gin.NAME=VALUE")
            if not name:
                raise UsageError(f"{arg}: the binding has no name; write --gin.NAME=VALUE")
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    return gin_files, bindings, rest


def resolve_gin_file(name: str) -> str:
    """Finds a gin file as given or under gin_configs/; raises UsageError naming where it looked."""
    candidates = [pathlib.Path(name), GIN_CONFIG_DIR / name, GIN_CONFIG_DIR / "runs" / name]
    if name.startswith("gin_configs/"):
        candidates.append(GIN_CONFIG_DIR / name[len("gin_configs/"):])
    for path in candidates:
        if path.is_file():
            return str(path)
    looked = ", ".join(str(p) for p in candidates)
    raise UsageError(f"gin file {name!r} not found (looked at {looked}); "
                     f"pass an existing file, e.g. --gin_file=smoke.gin (gin_configs/runs/smoke.gin)")


def _not_a_missed_include(record: logging.LogRecord) -> bool:
    # gin looks for an `include` in the Python path before its search paths, and logs an ERROR
    # each time it is not there, even when it then finds the file (and an INFO line per lookup).
    return not record.getMessage().startswith(("Path not found:", "system_path_file_exists:"))


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses gin files and bindings; gin's own error is re-raised with the offending flag named."""
    import gin

    gin.add_config_file_search_path(str(GIN_CONFIG_DIR))
    gin.add_config_file_search_path(str(GIN_CONFIG_DIR / "runs"))
    paths = [resolve_gin_file(f) for f in gin_files]
    root = logging.getLogger()
    root.addFilter(_not_a_missed_include)
    try:
        gin.parse_config_files_and_bindings(paths, bindings, finalize_config=False)
    except (ValueError, SyntaxError, KeyError, ImportError) as e:
        raise UsageError(f"bad gin configuration ({', '.join(gin_files + list(bindings)) or 'no flags'}): {e}") from e
    finally:
        root.removeFilter(_not_a_missed_include)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines (oneDNN, CUDA stubs)
    are written by absl before its log is set up, where no log level reaches them."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow (SeqIO's input pipeline) without its start-up lines; an import error is
    raised as usual."""
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    with _native_stderr_silenced():
        import tensorflow  # noqa: F401


def import_task_module(bindings: Sequence[str]) -> None:
    """Imports the module that registers the SeqIO tasks: MIXTURE_OR_TASK_MODULE if a binding
    names it, else the project's `tasks`."""
    name = DEFAULT_TASK_MODULE
    for binding in bindings:
        key, _, value = binding.partition("=")
        if key.strip() == "MIXTURE_OR_TASK_MODULE":
            name = value.strip().strip("'\"")
    try:
        importlib.import_module(name)
    except ImportError as e:
        raise UsageError(f"cannot import the task module {name!r} (MIXTURE_OR_TASK_MODULE): {e}") from e


def usage() -> str:
    lines = ["usage: mmst SUBCOMMAND [--gin_file=FILE ...] [--gin.NAME=VALUE ...] [flags]", "", "subcommands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (SeqIO's input pipeline) is noisy
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"mmst: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _ = SUBCOMMANDS[name]
    try:
        gin_files, bindings, rest = split_gin_flags(rest)
        if name in TASK_SUBCOMMANDS:
            import_tensorflow_quietly()
            import_task_module(bindings)
        if name != "verify":  # every gin name a config may bind (`mmst verify` never imports JAX)
            importlib.import_module("mmst_jax.cli.configurables")
        module = importlib.import_module(module_name)
        parse_gin(gin_files, bindings)
    except UsageError as e:
        print(f"mmst {name}: {e}", file=sys.stderr)
        return 2
    try:
        if name in REPARSING_SUBCOMMANDS:
            return int(module.main(rest, gin_files, bindings) or 0)
        return int(module.main(rest) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Every user-facing error of the library is a ValueError subclass (BloomConfigError,
        # CheckpointError, VocabularyError, …) or a missing file; its message says what to do.
        _tell_other_hosts(f"mmst {name}: error: {e}")
        if os.environ.get("MMST_DEBUG"):
            raise
        print(f"mmst {name}: error: {e}\n(set MMST_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    except Exception as e:
        _tell_other_hosts(f"mmst {name}: {type(e).__name__}: {e}")
        raise


def _tell_other_hosts(message: str) -> None:
    """On several hosts, a failure here ends every host with this message (none waits for a
    heartbeat timeout at the next barrier); the traceback is printed first."""
    if "jax" not in sys.modules:
        return
    from mmst_jax import distributed

    if distributed.report_failure(message):
        import traceback

        traceback.print_exc()
        distributed.end_process(message)
