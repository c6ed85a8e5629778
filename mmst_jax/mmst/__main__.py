"""`python -m mmst_jax.mmst run|eval [--gin_file=F ...] [--gin.NAME=VALUE ...] [flags]`: the MMST
subcommands through the same gin edge as the `mmst` command (mmst_jax/cli.py)."""

import os
import sys

from mmst_jax import cli

COMMANDS = {"run": "mmst_jax.mmst.command", "eval": "mmst_jax.mmst.eval_command"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m mmst_jax.mmst {{{','.join(COMMANDS)}}} [--gin_file=F] [--gin.NAME=VALUE] [flags]",
              file=sys.stderr)
        return 2
    saved = dict(cli.SUBCOMMANDS)
    cli.SUBCOMMANDS.update({name: (module, f"mmst {name}") for name, module in COMMANDS.items()})
    try:
        return cli.main(argv)
    finally:
        cli.SUBCOMMANDS.clear()
        cli.SUBCOMMANDS.update(saved)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
