"""Where BLOOM's parameters and KV cache live on a mesh: their shardings under the logical axis
rules, computed from abstract shapes (nothing is allocated).

Every place that puts a model on a mesh — loading a checkpoint, the train state, the sampler, the
memory plan — asks here, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

from mmst_jax.models.bloom import BloomConfig


def abstract_params(config: BloomConfig) -> Any:
    """The parameters' shapes and dtypes, with their logical-axis boxes (nn.Partitioned)."""
    import jax
    import jax.numpy as jnp

    from mmst_jax.models.bloom import BloomForCausalLM

    return jax.eval_shape(lambda: BloomForCausalLM(config).init(jax.random.key(0), jnp.ones((1, 1), jnp.int32))
                          )["params"]


def param_shardings(config: BloomConfig, mesh, rules=None) -> Any:
    """A NamedSharding per parameter; a dimension its mesh axes do not divide is an error that
    names the parameter."""
    import flax.linen as nn

    from mmst_jax import sharding

    boxed = abstract_params(config)
    return sharding.logical_to_sharding(sharding.logical_specs(boxed), mesh, rules or sharding.DEFAULT_RULES,
                                        shapes=nn.unbox(boxed))


def cache_shardings(cache: Any, mesh, rules=None) -> Any:
    """A NamedSharding per KV-cache array (abstract or real) of `init_cache`."""
    from mmst_jax import sharding
    from mmst_jax.models.bloom_cache import cache_logical_axes

    return sharding.logical_to_sharding(cache_logical_axes(cache), mesh, rules or sharding.DEFAULT_RULES,
                                        shapes=cache)


def decoding_param_shardings(config: BloomConfig, mesh, rules=None) -> Any:
    """A NamedSharding per parameter of `bloom_cache.decoding_params`: each layer's as in the stack,
    without the layer axis; the transposed embedding's axes swapped."""
    import jax

    from mmst_jax import sharding

    def is_spec(x):
        return isinstance(x, jax.sharding.PartitionSpec)

    specs = sharding.logical_specs(abstract_params(config))
    layer = jax.tree.map(lambda s: jax.sharding.PartitionSpec(*tuple(s)[1:]), specs["h"], is_leaf=is_spec)
    tree = {name: spec for name, spec in specs.items() if name not in ("h", "word_embeddings")}
    tree["embedding_t"] = jax.sharding.PartitionSpec(*reversed(tuple(specs["word_embeddings"]["embedding"])))
    tree["layers"] = (layer,) * config.n_layer
    return sharding.logical_to_sharding(tree, mesh, rules or sharding.DEFAULT_RULES)
