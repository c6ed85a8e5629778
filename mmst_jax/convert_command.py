"""`mmst convert`: BLOOM checkpoints between HF safetensors and orbax.

    mmst convert --to orbax --input hf_dir/ --output ckpt_dir/    # HF -> orbax (config.json + params)
    mmst convert --to hf --input ckpt_dir/ --output hf_dir/       # orbax -> HF (transformers loads it)

An orbax model directory holds `config.json` (HF form) and `params/` (an orbax PyTree checkpoint).
On a mesh (a TPU slice) every host runs the same command; HF weights are read straight into their
shards and orbax writes each host's shards.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.hf import load_bloom, save_bloom


def save_orbax(config: BloomConfig, params, path: str) -> None:
    """Writes config.json and params/ under `path` (orbax writes atomically and finalises)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(path, "params"), params, force=True)
    tmp = os.path.join(path, ".config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(config.to_hf() | {"torch_dtype": config.param_dtype}, f, indent=2)
    os.replace(tmp, os.path.join(path, "config.json"))


def load_orbax(path: str, shardings=None):
    """Reads (config, params) written by `save_orbax`; with shardings, restores onto them."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from mmst_jax.models.bloom import init_params

    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, "params")):
        raise FileNotFoundError(f"{path} has no params/ directory: not a model written by "
                                "`mmst convert --to orbax`")
    with open(os.path.join(path, "config.json")) as f:
        raw = json.load(f)
    config = BloomConfig.from_hf(raw, param_dtype=raw.get("torch_dtype", "float32"))
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0), 1, 1))
    if shardings is not None:
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(path, "params"), abstract)
    return config, jax.tree.map(jnp.asarray, params)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmst convert", description=__doc__.split("\n")[0])
    parser.add_argument("--to", choices=("orbax", "hf"), required=True, help="the output format")
    parser.add_argument("--input", required=True, help="HF directory (--to orbax) or orbax model (--to hf)")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--dtype", default=None, help="cast the weights (float32, bfloat16)")
    args = parser.parse_args(argv)
    if args.to == "orbax":
        config, params = load_bloom(args.input, dtype=args.dtype)
        save_orbax(config, params, args.output)
    else:
        config, params = load_orbax(args.input)
        save_bloom(config, params, args.output, dtype=args.dtype)
    print(f"wrote {args.output} ({config.num_params() / 1e6:.1f}M parameters, "
          f"{config.n_layer} layers, hidden {config.hidden_size})")
    return 0
