"""Model definitions: BLOOM in Flax linen and its HF checkpoint import/export."""
