"""Training input: text examples -> token ids -> batches of model features, and a resumable iterator.

    pairs = [(prompt, completion), ...]
    data = BatchIterator(seqio_dataset(text_pairs_dataset(pairs, vocab), {"inputs": 256, "targets": 256}, 32))

Batches come from SeqIO's DecoderFeatureConverter over `{inputs, targets}` examples: the model reads
`decoder_input_tokens` (the concatenation shifted right) and is scored on `decoder_target_tokens`
with `decoder_loss_weights`, which are 1 on target tokens only (the prompt is masked out). Packed
batches also carry `decoder_segment_ids`. The shift-right token that starts every sequence is
`bos_id`, which callers set to `mmst_jax.vocab.start_id(vocabulary)` (EOS, else BOS), the token the
sampler puts before every prompt.

Order: `text_pairs_dataset(..., shuffle_seed=s)` is an endless stream of epochs, each a full
permutation of all the examples, seeded by (s, epoch), of which host `host` of `hosts` keeps
every `hosts`-th example (so every host's shard mixes all the sources); it is a deterministic
function of the seed, which is what `BatchIterator` needs to resume exactly.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from mmst_jax.records import read_jsonl
from mmst_jax.training.config import TrainingDataError

log = logging.getLogger(__name__)

FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")


def _check_example(record: dict) -> None:
    if not (isinstance(record.get("inputs"), str) and isinstance(record.get("targets"), str)):
        raise ValueError("each line must be an object with string 'inputs' and 'targets'")


def read_examples(path: str) -> list[dict[str, str]]:
    """A JSONL file whose every line is an object with string `inputs` and `targets`."""
    examples = [{"inputs": r["inputs"], "targets": r["targets"]} for r in read_jsonl(path, _check_example)]
    if not examples:
        raise ValueError(f"{path} holds no examples: nothing to train on")
    return examples


def _ragged(rows: Sequence[list[int]]):
    """An int32 RaggedTensor [len(rows), None] of token id lists."""
    import tensorflow as tf

    values = np.concatenate([np.asarray(r, np.int32) for r in rows])
    return tf.RaggedTensor.from_row_lengths(values, [len(r) for r in rows])


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch `epoch`'s order of `num_examples` examples: a permutation seeded by (seed, epoch), the
    same on every host and in every run."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def text_pairs_dataset(pairs: Sequence[tuple[str, str]], vocab, *, max_lengths: Mapping[str, int] | None = None,
                       host: int = 0, hosts: int = 1, shuffle_seed: int | None = None):
    """The {inputs, targets} token ids (tf.data, one example per element) of (prompt, completion)
    text pairs, as `seqio_dataset` batches them. Completions end with EOS, as SeqIO appends it.

    With `max_lengths` ({"inputs": N, "targets": M}), examples longer than them are dropped (never
    truncated) with a warning; without, `seqio_dataset` trims them. Raises TrainingDataError when no
    example is left for this host.

    Without `shuffle_seed`: one pass over the examples in their order, host `host` of `hosts`
    keeping every `hosts`-th one. With it: endless epochs, epoch e being all the examples in the
    order `epoch_order(n, shuffle_seed, e)` and host `host` keeping every `hosts`-th example of
    that order; give it to `seqio_dataset` with shuffle=False (it is shuffled already).
    """
    import tensorflow as tf

    inputs = vocab.encode_batch([prompt for prompt, _ in pairs])
    eos = [] if vocab.eos_id is None else [vocab.eos_id]
    targets = [t + eos for t in vocab.encode_batch([completion for _, completion in pairs])]
    examples = list(zip(inputs, targets))
    if max_lengths is not None:
        examples = [(a, b) for a, b in examples
                    if len(a) <= max_lengths["inputs"] and len(b) <= max_lengths["targets"]]
        if len(examples) < len(pairs):
            log.warning("%d of %d training examples are longer than %s tokens and were dropped",
                        len(pairs) - len(examples), len(pairs), dict(max_lengths))
    if not examples[host::hosts]:
        fit = f" fits the lengths {dict(max_lengths)}" if max_lengths is not None else " is left"
        raise TrainingDataError(f"no training example{fit}" + (f" for host {host} of {hosts}" if examples else ""))
    if shuffle_seed is None:
        examples = examples[host::hosts]
        ds = tf.data.Dataset.from_tensor_slices({"inputs": _ragged([a for a, _ in examples]),
                                                 "targets": _ragged([b for _, b in examples])})
        return ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]})  # ragged rows -> tensors

    table = {"inputs": _ragged([a for a, _ in examples]), "targets": _ragged([b for _, b in examples])}
    n, seed = len(examples), int(shuffle_seed)

    def shard_of_epoch(epoch):
        order = tf.numpy_function(lambda e: epoch_order(n, seed, e)[host::hosts], [epoch], tf.int64,
                                  stateful=False)
        order.set_shape([None])
        return tf.data.Dataset.from_tensor_slices(order)

    def lookup(index):
        return {"inputs": table["inputs"][index], "targets": table["targets"][index]}

    return tf.data.Dataset.counter().flat_map(shard_of_epoch).map(lookup)  # epochs 0, 1, 2, ...


def seqio_dataset(source, feature_lengths: Mapping[str, int], batch_size: int, *, pack: bool = True,
                  shuffle: bool = True, seed: int = 0, split: str = "train", bos_id: int = 0,
                  repeat: bool = True):
    """Batches of model features (tf.data) from a SeqIO task/mixture name or a tf.data dataset.

    A dataset must yield `inputs` and `targets` as int32 token ids; they are trimmed to
    `feature_lengths`; with `shuffle` it is repeated and mixed through a 1024-example buffer (a
    SeqIO task is shuffled by SeqIO). A `text_pairs_dataset` with a `shuffle_seed` is globally
    shuffled already: pass shuffle=False. `batch_size` is this host's rows per batch (the global
    batch divided by the number of hosts; each host reads its own shard of a SeqIO task). `bos_id`
    starts every sequence (the converter's shift-right token): pass
    `mmst_jax.vocab.start_id(vocabulary)`; SeqIO's default 0 suits only token ids without a
    vocabulary. Output order is a deterministic function of `seed`, which is what lets
    `BatchIterator` resume exactly.
    """
    import seqio
    import tensorflow as tf

    lengths = {"inputs": int(feature_lengths["inputs"]), "targets": int(feature_lengths["targets"])}
    converter = seqio.DecoderFeatureConverter(pack=pack, bos_id=bos_id)
    if isinstance(source, str):
        shard = seqio.ShardInfo(jax.process_index(), jax.process_count())
        try:
            ds = seqio.get_dataset(source, lengths, converter, dataset_split=split, shuffle=shuffle,
                                   num_epochs=None if repeat else 1, shard_info=shard, seed=seed)
        except ValueError as e:
            raise TrainingDataError(f"cannot read SeqIO task or mixture {source!r}: {e}") from e
    elif isinstance(source, tf.data.Dataset):
        spec = source.element_spec
        if not isinstance(spec, dict) or not {"inputs", "targets"} <= set(spec):
            raise TrainingDataError("a training dataset must yield dicts with 'inputs' and 'targets' "
                                    f"token ids, got {spec}")
        ds = source.map(lambda ex: {k: tf.cast(ex[k], tf.int32)[:lengths[k]] for k in ("inputs", "targets")})
        if repeat:
            ds = ds.repeat()
        if shuffle:
            ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
        ds = converter(ds, lengths)
    else:
        raise TrainingDataError(f"training data must be a SeqIO task/mixture name or a tf.data.Dataset, "
                                f"got {type(source).__name__}")
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


class BatchIterator:
    """Numpy batches from a tf.data dataset, with a position that checkpoints save and restore.

    The dataset must be deterministic (as `seqio_dataset`'s is for a given seed): restoring
    position n re-reads the dataset from its start and skips n batches, so the run continues with
    exactly the batch it would have seen.
    """

    def __init__(self, dataset, position: int = 0):
        self._dataset = dataset
        self.set_state({"position": position})

    def get_state(self) -> dict[str, int]:
        return {"position": self._position}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._position = int(state["position"])
        self._iterator = None  # opened lazily, at the right place

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = iter(self._dataset.skip(self._position).as_numpy_iterator())
        batch = next(self._iterator)
        self._position += 1
        return batch
