"""Sampling: the KV-cached decode loop, stop strings, and sampling prompts into records."""
