"""The order a round's training records are trained in: a global seeded shuffle.

Fine-tuning (`mmst_jax.mmst.finetune`) reads the records method by method and dataset by dataset;
every epoch must still be a full permutation of all of them (methods and datasets interleaved from
the first batch on), reshuffled each epoch, the same for a seed, split over the hosts after the
permutation, and exactly resumable by `training.BatchIterator`.
"""

import types

import numpy as np
import pytest

import mmst_jax.training
from mmst_jax.records import part_name, write_jsonl
from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

DATASETS = ("gsm8k", "svamp", "asdiv")
METHODS = ("text", "code")
PER_GROUP = 400  # records per (dataset, method): each method's records outnumber a 1024-record buffer
LENGTHS = {"inputs": 16, "targets": 8}
BATCH = 16  # rows per batch; 2 or 3 examples a row (about 40 a batch, 60 batches an epoch)


def _records():
    """Every method's records, dataset by dataset, as a `train/` stage holds them."""
    return {m: [{"problem_id": f"{d}-{i}", "dataset": d, "method": m, "sample_index": 0, "round": 1,
                 "prompt": f"{m} {d} {i}:", "completion": f" {i % 10}", "gold": str(i % 10), "correct": True,
                 "source": "self"} for d in DATASETS for i in range(PER_GROUP)] for m in METHODS}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A round's train/ stage, the tokenizer, and the records by the token ids of their examples."""
    root = tmp_path_factory.mktemp("order")
    records = _records()
    for method, rs in records.items():
        write_jsonl(root / "train" / method / part_name(0, 1), rs)
    texts = [r["prompt"] + r["completion"] for rs in records.values() for r in rs]
    train_bpe_tokenizer(texts, vocab_size=300, path=root / "tokenizer.json")
    vocab = HFTokenizerVocabulary(root / "tokenizer.json")
    flat = [r for rs in records.values() for r in rs]
    key = {tuple(vocab.encode(r["prompt"]) + vocab.encode(r["completion"]) + [vocab.eos_id]): n
           for n, r in enumerate(flat)}
    assert len(key) == len(flat)  # every example is told apart by its tokens
    return types.SimpleNamespace(root=root, records=flat, key=key)


class _Captured(Exception):
    pass


def _round_data(run, monkeypatch, *, seed: int, host: int = 0, hosts: int = 1):
    """The batches `mmst_jax.mmst.finetune.finetune` trains on (its call of `training.train` is
    replaced by one that keeps the data and stops)."""
    from mmst_jax.mmst import finetune

    seen = {}

    def fake_train(config, init, data, *args, **kwargs):
        seen["data"] = data
        raise _Captured

    monkeypatch.setattr(mmst_jax.training, "train", fake_train)
    ctx = types.SimpleNamespace(tokenizer_path=run.root / "tokenizer.json",
                                config=types.SimpleNamespace(feature_lengths=LENGTHS), host=host, hosts=hosts,
                                mesh=None, rules=None)
    from mmst_jax.models.bloom import BloomConfig

    with pytest.raises(_Captured):
        finetune.finetune(ctx, run.root / "checkpoint", BloomConfig.preset("tiny"), None,
                          mmst_jax.training.TrainConfig(batch_size=BATCH * hosts, seed=seed), run.root / "train",
                          seed=1)
    monkeypatch.undo()
    return seen["data"]


def _batches(data, n: int) -> list[dict]:
    it = data.as_numpy_iterator()
    return [next(it) for _ in range(n)]


def _examples(run, batch) -> list[int]:
    """The records (their index in `run.records`) of a batch's examples, in stream order."""
    out = []
    for targets, segments in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"]):
        for s in sorted(set(segments.tolist()) - {0}):
            out.append(run.key[tuple(targets[segments == s].tolist())])
    return out


def _stream(run, batches) -> list[int]:
    return [n for b in batches for n in _examples(run, b)]


def test_every_epoch_is_a_full_permutation_mixing_methods_and_datasets_from_the_first_batch(run, monkeypatch):
    n = len(run.records)
    batches = _batches(_round_data(run, monkeypatch, seed=0), n // BATCH)  # 2 epochs or more (2+ examples a row)
    for b in batches[:5]:  # every one of the first batches holds both methods
        methods = {run.records[i]["method"] for i in _examples(run, b)}
        assert methods == set(METHODS), methods
    stream = _stream(run, batches)
    assert len(stream) >= 2 * n
    first, second = stream[:n], stream[n:2 * n]
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))  # each example once an epoch
    assert first != second  # reshuffled each epoch
    quarter = [run.records[i] for i in first[:n // 4]]
    share = {m: sum(r["method"] == m for r in quarter) / len(quarter) for m in METHODS}
    assert all(0.4 < s < 0.6 for s in share.values()), share  # each method about half, from the start
    groups = {(d, m): sum((r["dataset"], r["method"]) == (d, m) for r in quarter) / len(quarter)
              for d in DATASETS for m in METHODS}
    assert all(0.1 < s < 0.24 for s in groups.values()), groups  # each dataset of each method about 1/6


def test_the_order_is_a_function_of_the_seed(run, monkeypatch):
    one = _batches(_round_data(run, monkeypatch, seed=3), 12)
    again = _batches(_round_data(run, monkeypatch, seed=3), 12)
    other = _batches(_round_data(run, monkeypatch, seed=4), 12)
    for a, b in zip(one, again):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert _stream(run, one) == _stream(run, again)
    assert _stream(run, one) != _stream(run, other)


def test_hosts_split_the_permutation_so_each_shard_is_a_mix(run, monkeypatch):
    n = len(run.records)
    shards = []
    for host in range(2):
        batches = _batches(_round_data(run, monkeypatch, seed=0, host=host, hosts=2), n // (2 * BATCH) + 4)
        methods = {run.records[i]["method"] for i in _examples(run, batches[0])}
        assert methods == set(METHODS), (host, methods)
        shards.append(_stream(run, batches)[:n // 2])  # this host's share of the first epoch
    assert sorted(shards[0] + shards[1]) == list(range(n))  # together: every example once


def test_a_restored_iterator_continues_with_the_batches_of_an_uninterrupted_one(run, monkeypatch):
    steps, stop = 80, 55  # stopped late in the first epoch, continued into the second
    whole = mmst_jax.training.BatchIterator(_round_data(run, monkeypatch, seed=5))
    expected = [next(whole) for _ in range(steps)]
    first = mmst_jax.training.BatchIterator(_round_data(run, monkeypatch, seed=5))
    for _ in range(stop):
        next(first)
    state = first.get_state()
    assert state == {"position": stop}
    restored = mmst_jax.training.BatchIterator(_round_data(run, monkeypatch, seed=5))  # a fresh construction
    restored.set_state(state)
    for want in expected[stop:]:
        got = next(restored)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
