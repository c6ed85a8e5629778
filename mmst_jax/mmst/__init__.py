"""The MMST loop: rounds, stages, run directory, ablations, reports."""
