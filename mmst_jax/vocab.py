"""SeqIO vocabularies over HF `tokenizers` files (BLOOM's `tokenizer.json`: byte-level BPE).

`HFTokenizerVocabulary(path)` wraps a `tokenizer.json` (or a directory holding one) as a
`seqio.Vocabulary`: encode/decode in Python, numpy and TensorFlow (for SeqIO's tf.data pipelines),
the special ids read from the tokenizer itself, and equality by content.

BLOOM's special tokens are `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3. SeqIO's feature converters pad
with id 0; for BLOOM that is `<unk>`, which byte-level BPE never produces, so padding can never be
confused with text. Attention masks come from lengths and segment ids, never from token identity.

Where a sequence starts (docs/architecture.md): every sequence the model reads, in training and in
sampling, starts with one token, `start_id(vocabulary)`: the tokenizer's end-of-text token `</s>`
(EOS), or its `<s>` (BOS) if it has no EOS; a tokenizer with neither is refused. BLOOM's pretraining
separated documents with EOS, so a sequence starting after EOS is what a published BLOOM has seen;
`<s>` it never trained on. Training passes the id to SeqIO's DecoderFeatureConverter as its
shift-right token (`bos_id`); sampling prepends it to every prompt (`encode_prompts`).

`train_bpe_tokenizer` trains a small tokenizer of the same format on the spot (tests, smoke runs:
nothing is downloaded); it has BLOOM's special tokens, `</s>` among them.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tokenizers
from etils import epath

from mmst_jax import storage

BLOOM_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


class VocabularyError(ValueError):
    """A tokenizer that cannot be used as asked; the message names the file and the fix."""


def _read_tokenizer_json(path: epath.PathLike) -> tuple[str, str]:
    """Returns (resolved file name, JSON text) of a tokenizer.json file or of a directory's one."""
    path = epath.Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        storage.check_bucket(path)  # a missing or refused bucket says so
        raise VocabularyError(
            f"tokenizer file {path} does not exist: point the vocabulary at an HF tokenizer.json "
            "(or a directory holding one)")
    with storage.naming(path):
        return os.fspath(path), path.read_text()


def start_id(vocabulary) -> int:
    """The token every sequence the model reads starts with (the one rule, for training and sampling):
    the vocabulary's end-of-text id `eos_id` (`</s>`), else its `bos_id` (`<s>`).

    Works on any vocabulary with `eos_id` and `bos_id` (an HFTokenizerVocabulary, a SeqIO task's
    output vocabulary). Raises VocabularyError if it has neither.
    """
    for name in ("eos_id", "bos_id"):
        token = getattr(vocabulary, name, None)
        if token is not None:
            return int(token)
    raise VocabularyError(
        f"{vocabulary!r} has neither an end-of-text (EOS) nor a beginning-of-sequence (BOS) token, and every "
        "sequence the model reads starts with one of them: use a tokenizer that has '</s>' (or name its "
        "end-of-text token with HFTokenizerVocabulary(..., eos_token=...))")


class HFTokenizerVocabulary(seqio.Vocabulary):
    """A `seqio.Vocabulary` over an HF `tokenizers` tokenizer.json.

    Args:
      path: a tokenizer.json file, or a directory holding one (an HF model directory).
      extra_ids: sentinel ids appended after the tokenizer's own (SeqIO convention).
      unk_token, bos_token, eos_token, pad_token: the special tokens to look up (BLOOM's by default);
        a token the tokenizer does not have leaves that id as None (pad falls back to 0).
    """

    def __init__(self, path: epath.PathLike, extra_ids: int = 0, *,
                 unk_token: str = "<unk>", bos_token: str = "<s>", eos_token: str = "</s>",
                 pad_token: str = "<pad>"):
        self._path, self._json = _read_tokenizer_json(path)
        try:
            self._tokenizer = tokenizers.Tokenizer.from_str(self._json)
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON.
            raise VocabularyError(f"{self._path} is not a valid HF tokenizer.json: {e}") from e
        self._special = {
            "unk": self._tokenizer.token_to_id(unk_token),
            "bos": self._tokenizer.token_to_id(bos_token),
            "eos": self._tokenizer.token_to_id(eos_token),
            "pad": self._tokenizer.token_to_id(pad_token),
        }
        super().__init__(extra_ids=extra_ids)

    # --- identity -----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._path

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        return self._tokenizer

    def __eq__(self, other) -> bool:
        if not isinstance(other, HFTokenizerVocabulary):
            return False
        return (self.extra_ids == other.extra_ids
                and json.loads(self._json) == json.loads(other._json))

    def __hash__(self) -> int:
        return hash((self._tokenizer.get_vocab_size(with_added_tokens=True), self.extra_ids))

    def __repr__(self) -> str:
        return f"HFTokenizerVocabulary({self._path!r}, vocab_size={self.vocab_size})"

    # --- special ids --------------------------------------------------------------------------
    @property
    def unk_id(self) -> int | None:
        return self._special["unk"]

    @property
    def bos_id(self) -> int | None:
        return self._special["bos"]

    @property
    def eos_id(self) -> int | None:
        return self._special["eos"]

    @property
    def pad_id(self) -> int:
        pad = self._special["pad"]
        return 0 if pad is None else pad

    @property
    def start_id(self) -> int:
        """The token every sequence the model reads starts with: EOS, else BOS (module `start_id`)."""
        return start_id(self)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(i for i in self._special.values() if i is not None)

    @property
    def _base_vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    # --- Python / numpy -----------------------------------------------------------------------
    def _encode(self, s: str) -> list[int]:
        return self._tokenizer.encode(s, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many strings at once (the tokenizer's own parallel batch path)."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids the model is given for prompts it continues: each prompt's ids after
        `start_id` (EOS, else BOS), as every training sequence starts (see the module docstring)."""
        start = self.start_id
        return [[start] + ids for ids in self.encode_batch(texts)]

    def _decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(np.asarray(ids).tolist()) for ids in batch]

    # --- TensorFlow ---------------------------------------------------------------------------
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """Scalar string -> int32 [n]; string vector -> int32 RaggedTensor [batch, None]."""
        s = tf.convert_to_tensor(s, dtype=tf.string)

        def encode_np(b) -> np.ndarray:
            b = b.item() if isinstance(b, np.ndarray) else b
            return np.asarray(self._encode(b.decode("utf-8")), np.int32)

        def encode_one(x):
            return tf.numpy_function(encode_np, [x], tf.int32, stateful=False)

        if s.shape.rank == 0:
            ids = encode_one(s)
            ids.set_shape([None])
            return ids
        return tf.map_fn(lambda x: tf.RaggedTensor.from_tensor(encode_one(x)[None])[0], s,
                         fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """int [n] -> scalar string; int [batch, n] -> string [batch]."""
        ids = tf.convert_to_tensor(ids)

        def decode_np(x):
            x = np.asarray(x)
            if x.ndim == 1:
                return np.asarray(self._decode(x.tolist()).encode("utf-8"), dtype=object)
            return np.asarray([self._decode(row.tolist()).encode("utf-8") for row in x], dtype=object)

        out = tf.numpy_function(decode_np, [ids], tf.string, stateful=False)
        out.set_shape(ids.shape[:-1])
        return out

    # --- checks -------------------------------------------------------------------------------
    def check_fits_model(self, model_vocab_size: int, model_source: str = "the model") -> None:
        """Raises VocabularyError if this tokenizer can emit ids the model's embedding lacks."""
        if self.vocab_size > model_vocab_size:
            raise VocabularyError(
                f"tokenizer {self._path} has {self.vocab_size} ids but {model_source} has an embedding "
                f"of only {model_vocab_size} rows: use the tokenizer that belongs to the model, or a "
                f"model config with vocab_size >= {self.vocab_size}")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, path: epath.PathLike | None = None,
                        special_tokens: Sequence[str] = BLOOM_SPECIAL_TOKENS,
                        min_frequency: int = 2) -> tokenizers.Tokenizer:
    """Trains a byte-level BPE tokenizer in BLOOM's format; the special tokens take ids 0, 1, …

    Every byte is in the initial alphabet, so any string encodes and decodes back exactly.
    If `path` is given (local or gs://) the tokenizer.json is written there (atomically) and also returned.
    """
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(special_tokens),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if path is not None:
        storage.write_bytes(path, tok.to_str().encode("utf-8"))  # atomic; overwrites an earlier one
    return tok
