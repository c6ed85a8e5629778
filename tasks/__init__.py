"""SeqIO tasks and mixtures of mmst_jax; `import tasks` registers them."""
