"""mmst_jax: Multi-Method Self-Training on JAX."""

__version__ = "0.1.0"
