"""`mmst convert`: BLOOM checkpoints between HF safetensors and orbax.

    mmst convert --to orbax --input hf_dir/ --output ckpt_dir/    # HF -> orbax (config.json + params)
    mmst convert --to hf --input ckpt_dir/ --output hf_dir/       # orbax -> HF (transformers loads it)

    mmst convert --to orbax --sharded --gin_file=topologies/v4-512.gin --input /gcs/B/bloom \
        --output gs://B/bloom-orbax                                # on every host of a slice

An orbax model directory holds `config.json` (HF form) and `params/` (an orbax PyTree checkpoint);
it may be local or `gs://`. With `--sharded` the weights go onto the mesh of the gin topology: every
host runs the same command, reads only the slices its devices hold (host memory peaks near one
shard) and orbax writes each host's shards.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from mmst_jax.cli.configurables import MeshConfig, initialize_distributed
from mmst_jax.models.hf import load_bloom, save_bloom
from mmst_jax.models.orbax import load_orbax, save_orbax


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst convert", description=__doc__.split("\n")[0])
    parser.add_argument("--to", choices=("orbax", "hf"), required=True, help="the output format")
    parser.add_argument("--input", required=True, help="HF directory (--to orbax) or orbax model (--to hf)")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--dtype", default=None, help="cast the weights (float32, bfloat16)")
    parser.add_argument("--sharded", action="store_true",
                        help="--to orbax on the mesh of the gin topology (every host of a slice)")
    args = parser.parse_args(argv)
    if args.sharded and args.to != "orbax":
        raise ValueError("--sharded converts HF -> orbax only; orbax -> HF runs on one host")
    if args.to == "orbax":
        mesh = None
        if args.sharded:
            initialize_distributed()
            mesh = MeshConfig().make_mesh()
        config, params = load_bloom(args.input, mesh=mesh, dtype=args.dtype,
                                    rules=MeshConfig().rules if args.sharded else None)
        save_orbax(config, params, args.output)
    else:
        config, params = load_orbax(args.input)
        save_bloom(config, params, args.output, dtype=args.dtype)
    print(f"wrote {args.output} ({config.num_params() / 1e6:.1f}M parameters, "
          f"{config.n_layer} layers, hidden {config.hidden_size})")
    return 0
