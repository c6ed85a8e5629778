"""Random tiny BLOOMs built with `transformers` (torch, CPU): the reference the tests compare with."""

from __future__ import annotations

import numpy as np


def random_hf_bloom(n_head: int, *, head_dim: int = 8, n_layer: int = 3, vocab_size: int = 320,
                    seed: int = 0, noise: float = 0.3):
    """A BloomForCausalLM with random weights, LayerNorms and biases perturbed away from their
    init (ones/zeros) so that every parameter matters in a comparison."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.BloomConfig(
        vocab_size=vocab_size, hidden_size=n_head * head_dim, n_layer=n_layer, n_head=n_head,
        unk_token_id=0, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    model = transformers.BloomForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


def left_padded_batch(lengths, vocab_size: int, seed: int = 0, pad_id: int = 3):
    """ids, mask [batch, max(lengths)], left-padded, tokens drawn from the non-special ids."""
    rs = np.random.RandomState(seed)
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rs.randint(4, vocab_size, size=n)
        mask[row, width - n:] = 1
    return ids, mask


def write_tiny_hf_checkpoint(path, tokenizer_json, *, vocab_size: int = 1024, n_head: int = 4, head_dim: int = 8,
                             n_layer: int = 2, seed: int = 0):
    """A random BLOOM in the published HF format (config.json, safetensors) with `tokenizer_json`
    beside it: what a rehearsal of an experiment loads in place of the published checkpoint."""
    import shutil

    model = random_hf_bloom(n_head, head_dim=head_dim, n_layer=n_layer, vocab_size=vocab_size, seed=seed, noise=0.0)
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(tokenizer_json, f"{path}/tokenizer.json")
    return path
