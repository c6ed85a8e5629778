"""Sampling: prompt records in, sample records out.

    decode        the compiled programs of continuous batching (prefill, insert, generate), token choice
    sampler       the Sampler: token prompts sampled by continuous batching, on an optional mesh
    stop_strings  stop strings matched on bytes inside the loop
    prompts       prompt records: a prompts JSONL, a SeqIO task, the built-in prompts
    records       the sample record builder and the resumable, sharded sampling of the MMST loop
    job           the `mmst sample` job: a model from settings, its prompts sampled into records
"""
