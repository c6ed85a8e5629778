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
import json
import os
from typing import Sequence

from etils import epath

from mmst_jax.cli.configurables import MeshConfig, initialize_distributed
from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.hf import load_bloom, save_bloom


def _model_dir(path: str) -> epath.Path:
    """Orbax wants absolute paths; gs:// ones are left as they are."""
    return epath.Path(path if "://" in str(path) else os.path.abspath(path))


def save_orbax(config: BloomConfig, params, path: str) -> None:
    """Writes params/ and config.json under `path` (orbax writes atomically and finalises; on
    several hosts each writes its own shards and the first writes config.json)."""
    import jax
    import orbax.checkpoint as ocp

    path = _model_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / "params", params, force=True)
    if jax.process_index() == 0:
        tmp = path / ".config.json.tmp"
        tmp.write_text(json.dumps(config.to_hf() | {"torch_dtype": config.param_dtype}, indent=2))
        tmp.replace(path / "config.json")


def load_orbax(path: str, shardings=None):
    """Reads (config, params) written by `save_orbax`; with shardings, restores onto them."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from mmst_jax.models.bloom import init_params

    path = _model_dir(path)
    if not (path / "params").is_dir():
        raise FileNotFoundError(f"{path} has no params/ directory: not a model written by "
                                "`mmst convert --to orbax`")
    raw = json.loads((path / "config.json").read_text())
    config = BloomConfig.from_hf(raw, param_dtype=raw.get("torch_dtype", "float32"))
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0), 1, 1))
    if shardings is None:  # whole, on this process's first device, whatever mesh wrote it
        shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
                                 abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path / "params", abstract)
    return config, jax.tree.map(jnp.asarray, params)


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
