"""`python -m mmst_jax` is the `mmst` command."""

import sys

from mmst_jax.cli import main

sys.exit(main())
