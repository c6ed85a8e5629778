"""A SeqIO task over in-memory (inputs, targets) text pairs, for tests that train from a task name."""

from __future__ import annotations


def register_pairs_task(name: str, pairs, vocab) -> str:
    """Registers (again, if it exists) task `name`: split `train`, the pairs tokenized with `vocab`,
    EOS after the targets. Returns the name."""
    import seqio
    import tensorflow as tf

    def source(split, shuffle_files, seed=None):
        del split, shuffle_files, seed
        return tf.data.Dataset.from_tensor_slices({"inputs": [p for p, _ in pairs], "targets": [t for _, t in pairs]})

    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    features = {k: seqio.Feature(vocab, add_eos=(k == "targets")) for k in ("inputs", "targets")}
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(source, splits=["train"]),
                           preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
                           output_features=features)
    return name
