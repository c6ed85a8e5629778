"""The SeqIO vocabulary over an HF tokenizer.json, with a tokenizer trained here."""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from mmst_jax.models.bloom import BloomConfig
from mmst_jax.vocab import HFTokenizerVocabulary, VocabularyError, train_bpe_tokenizer

TEXTS = [
    "Q: Natalia sold clips to 48 of her friends in April. How many clips did she sell?",
    "def solution():\n    clips_april = 48\n    return clips_april + clips_april // 2\n",
    "The answer is 72.",
    "Unicode survives: café — 3½ € and 日本語\n\n\ttabs",
]


@pytest.fixture(scope="module")
def vocab(bpe_tokenizer_dir):
    return HFTokenizerVocabulary(bpe_tokenizer_dir)


def test_special_ids_come_from_the_tokenizer(vocab):
    assert (vocab.unk_id, vocab.bos_id, vocab.eos_id, vocab.pad_id) == (0, 1, 2, 3)
    assert vocab.vocab_size == 1024
    assert isinstance(vocab, seqio.Vocabulary)


def test_training_again_replaces_the_tokenizer_file(tmp_path):
    train_bpe_tokenizer(TEXTS * 5, 300, tmp_path / "tokenizer.json")
    train_bpe_tokenizer(TEXTS * 5, 280, tmp_path / "tokenizer.json")
    assert HFTokenizerVocabulary(tmp_path).vocab_size == 280
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


def test_special_ids_follow_a_different_tokenizer(tmp_path):
    train_bpe_tokenizer(TEXTS * 5, 300, tmp_path / "tokenizer.json",
                        special_tokens=["<pad>", "</s>", "<unk>", "<s>"])
    v = HFTokenizerVocabulary(tmp_path)
    assert (v.pad_id, v.eos_id, v.unk_id, v.bos_id) == (0, 1, 2, 3)


def test_python_round_trip_is_exact(vocab):
    for text in TEXTS:
        ids = vocab.encode(text)
        assert all(isinstance(i, int) for i in ids)
        assert vocab.decode(ids) == text
    # Byte-level BPE never needs <unk>, so SeqIO's 0-padding cannot be confused with text.
    assert 0 not in vocab.encode(" ".join(TEXTS))


def test_decode_stops_at_eos_and_drops_special_ids(vocab):
    ids = vocab.encode("The answer is 72.")
    assert vocab.decode(ids + [vocab.eos_id] + vocab.encode(" junk")) == "The answer is 72."
    assert vocab.decode(np.asarray([vocab.pad_id] * 3 + ids)) == "The answer is 72."


def test_tf_matches_python_scalar_batch_and_in_a_dataset(vocab):
    expected = [vocab.encode(t) for t in TEXTS]
    for text, ids in zip(TEXTS, expected):
        np.testing.assert_array_equal(vocab.encode_tf(tf.constant(text)).numpy(), ids)
        assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == text
    ragged = vocab.encode_tf(tf.constant(TEXTS))
    assert [r.tolist() for r in ragged.numpy()] == expected
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).map(vocab.encode_tf)
    assert [x.numpy().tolist() for x in ds] == expected
    padded = tf.ragged.constant(expected).to_tensor(default_value=vocab.pad_id)
    assert [s.decode() for s in vocab.decode_tf(padded).numpy()] == TEXTS


def test_equality_is_by_content(vocab, bpe_tokenizer_dir, tmp_path):
    assert vocab == HFTokenizerVocabulary(bpe_tokenizer_dir / "tokenizer.json")
    train_bpe_tokenizer(TEXTS * 5, 300, tmp_path / "tokenizer.json")
    assert vocab != HFTokenizerVocabulary(tmp_path)
    assert vocab != HFTokenizerVocabulary(bpe_tokenizer_dir, extra_ids=10)


def test_tokenizer_larger_than_the_embedding_is_refused(vocab):
    model = BloomConfig.preset("tiny", vocab_size=512)
    with pytest.raises(VocabularyError, match=r"tokenizer.json has 1024 ids but tiny has an embedding "
                                              r"of only 512 rows.*vocab_size >= 1024"):
        vocab.check_fits_model(model.vocab_size, "tiny")
    vocab.check_fits_model(1024)


def test_missing_or_corrupt_tokenizer_file_is_named(tmp_path):
    with pytest.raises(VocabularyError, match="tokenizer.json does not exist"):
        HFTokenizerVocabulary(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(VocabularyError, match="is not a valid HF tokenizer.json"):
        HFTokenizerVocabulary(tmp_path)
