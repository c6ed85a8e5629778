"""The host-side verifier: answer comparison and sandboxed code execution (no JAX here)."""
