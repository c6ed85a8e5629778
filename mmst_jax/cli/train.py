"""`mmst train`: fine-tune BLOOM on a SeqIO task or mixture, or on a JSONL file of {inputs, targets}.

    mmst train                                    # built-in default: tiny random BLOOM, built-in sums
    mmst train --gin_file=train.gin --gin.MIXTURE_OR_TASK_NAME="'my_mixture'" --gin.MODEL_DIR="'runs/ft'"
    mmst train --data train.jsonl --workdir runs/ft --gin.train.hf_checkpoint="'bloom-560m/'"

Settings are gin bindings of `train.*` (data, model, dtype policy, mesh: the arguments of
mmst_jax.training.finetune.finetune) and `TrainConfig.*` (optimizer, schedule, batch, accumulation,
checkpoints); `gin_configs/train.gin` lists them. A run finding checkpoints in its working directory
resumes from the newest complete one. At the end the trained parameters are written to
WORKDIR/model (config.json + params/, as `mmst convert` writes), ready for `mmst convert --to hf`
or as the next round's starting point.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from mmst_jax.cli import configurables


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="JSONL of {inputs, targets} (default: gin's task, else built-in sums)")
    parser.add_argument("--workdir", help="checkpoints, TensorBoard events and the final model go here")
    args = parser.parse_args(argv)
    kwargs = {"workdir": args.workdir} if args.workdir else {}
    summary = configurables.train(args.data, **kwargs)
    loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
    print(f"trained to step {summary['steps']} (last loss {loss}); checkpoints and TensorBoard events in "
          f"{summary['workdir']}" + (f"; model written to {summary['model']}" if "model" in summary else ""))
    return 0
