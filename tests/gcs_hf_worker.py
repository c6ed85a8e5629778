"""One host of the 2-process HF checkpoint test (tests/test_gcs_hf.py): loads an HF BLOOM directory
from gs:// onto a (1, 2, 2) mesh over every process's devices, counting the bytes this host reads,
then the same checkpoint from a local directory onto the same mesh, and writes JSON: the bytes,
whether the parameters and the logits of one forward pass are identical, the logits themselves.

    python gcs_hf_worker.py --gcs gs://B/ckpt --local DIR --coordinator HOST:PORT --process_id I --output F
"""

import argparse
import json

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gcs", required=True)
    parser.add_argument("--local", required=True)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    from mmst_jax import distributed

    distributed.initialize_distributed(args.coordinator, 2, args.process_id)

    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from mmst_jax import sharding, storage
    from mmst_jax.models.bloom import BloomForCausalLM
    from mmst_jax.models.hf import load_bloom

    mesh = sharding.make_mesh((1, 2, 2))
    storage.READ_STATS.update(bytes=0, requests=0)
    config, from_gcs = load_bloom(args.gcs, mesh=mesh)
    read = dict(storage.READ_STATS)
    _, from_local = load_bloom(args.local, mesh=mesh)

    ids = np.random.RandomState(0).randint(4, config.vocab_size, size=(2, 12)).astype(np.int32)
    ids = jax.make_array_from_callback(ids.shape, NamedSharding(mesh, PartitionSpec()), lambda i: ids[i])
    forward = jax.jit(lambda p, x: BloomForCausalLM(config).apply({"params": p}, x))
    a, b = sharding.gather_to_host((forward(from_gcs, ids), forward(from_local, ids)))
    pa, pb = sharding.gather_to_host((from_gcs, from_local))
    same_params = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))
    with open(args.output, "w") as f:
        json.dump({"bytes": read["bytes"], "requests": read["requests"], "same_params": same_params,
                   "same_logits": bool(np.array_equal(a, b)), "logits": np.asarray(a, np.float64).tolist()}, f)


if __name__ == "__main__":
    main()
