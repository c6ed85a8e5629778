"""Runs a sharded forward pass and a training step of a tiny BLOOM; prints the results as JSON.

Used by the partitioning tests in fresh processes (simulated devices need XLA_FLAGS before JAX
starts; the multi-host test starts two of these with jax.distributed).

    python sharded_worker.py --mesh D,F,T [--mesh ...] [--coordinator HOST:PORT --num_processes N
                             --process_id I] [--output results.json]

A mesh using fewer devices than there are takes the first ones (1,1,1 is the one-device reference).
"""

import argparse
import json
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh", action="append", required=True)
    parser.add_argument("--coordinator")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--output")
    args = parser.parse_args()

    from mmst_jax import distributed

    distributed.initialize_distributed(args.coordinator, args.num_processes, args.process_id)

    results = [run(tuple(int(x) for x in m.split(","))) for m in args.mesh]
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f)
    else:
        print(json.dumps(results))
    sys.stdout.flush()


def run(mesh_shape):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from mmst_jax import sharding
    from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=256, hidden_size=64, n_layer=2, n_head=8)
    model = BloomForCausalLM(config)
    rules = sharding.DEFAULT_RULES
    size = mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
    mesh = sharding.make_mesh(mesh_shape, jax.devices()[:size])

    # Parameters created directly in their shards from the abstract shapes.
    ids_example = jnp.ones((1, 4), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), ids_example))["params"]
    specs = sharding.logical_specs(boxed)
    param_shardings = sharding.logical_to_sharding(specs, mesh, rules, shapes=nn.unbox(boxed))
    init = sharding.init_sharded(
        lambda rng: nn.unbox(model.init(rng, ids_example)["params"]), param_shardings)
    params = init(jax.random.key(42))

    # The global batch is the same everywhere; each process feeds only its own rows.
    rs = np.random.RandomState(0)
    global_ids = rs.randint(4, 256, size=(8, 12)).astype(np.int32)
    global_mask = np.ones_like(global_ids)
    global_mask[1, :5] = 0
    global_mask[6, :2] = 0
    rows = len(global_ids) // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    batch = sharding.host_batch_to_global(
        {"ids": global_ids[mine], "mask": global_mask[mine]}, mesh, rules)

    def loss_fn(p, ids, mask):
        logits = model.apply({"params": p}, ids, mask)
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
        target_logp = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        weights = (mask[:, 1:] * mask[:, :-1]).astype(jnp.float32)
        return -(target_logp * weights).sum() / weights.sum(), logits

    tx = optax.adamw(1e-2, weight_decay=0.1)
    opt_state_shardings = sharding.logical_to_sharding(
        sharding.logical_specs(jax.eval_shape(tx.init, boxed)), mesh, rules)
    opt_state = jax.jit(tx.init, out_shardings=opt_state_shardings)(params)

    @jax.jit
    def step(p, o, ids, mask):
        with sharding.activation_sharding(mesh, rules):
            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, ids, mask)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss, logits, grads

    new_params, _, loss, logits, grads = step(params, opt_state, batch["ids"], batch["mask"])

    logits, grads, new_params = sharding.gather_to_host((logits, grads, new_params))
    qkv = params["h"]["self_attention"]["query_key_value"]["kernel"]
    result = {
        "mesh": list(mesh_shape),
        "devices": jax.device_count(), "processes": jax.process_count(),
        "loss": float(loss), "logits": logits[global_mask.astype(bool)].tolist(),
        "grads": [np.asarray(g).ravel()[:64].tolist() + [float(np.abs(g).sum())]
                  for g in jax.tree.leaves(grads)],
        "new_params": [float(np.abs(np.asarray(p, np.float64)).sum()) for p in jax.tree.leaves(new_params)],
        "qkv_shard_shape": list(qkv.addressable_shards[0].data.shape),
    }
    return result


if __name__ == "__main__":
    main()
