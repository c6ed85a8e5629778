"""A vocabulary whose tokenizer is named when data is first encoded, not when tasks are registered.

`import tasks` registers every task before gin is parsed, so the tokenizer path (gin
`tasks.tokenizer.path` or `$MMST_TOKENIZER`) is not known yet. `DeferredVocabulary` stands in for
`mmst_jax.vocab.HFTokenizerVocabulary` and opens it on first use. Code that already holds a
vocabulary passes it to the task builders directly instead.
"""

from __future__ import annotations

import threading
from typing import Callable

import seqio

from mmst_jax.vocab import HFTokenizerVocabulary
from tasks import config


class DeferredVocabulary(seqio.Vocabulary):
    """Delegates to the HFTokenizerVocabulary at `path_fn()`, opened on first use and opened again
    only if the configured path changes."""

    def __init__(self, path_fn: Callable[[], str] = config.tokenizer_path):
        super().__init__(extra_ids=0)
        self._path_fn = path_fn
        self._vocab: HFTokenizerVocabulary | None = None
        self._path: str | None = None
        self._lock = threading.Lock()

    @property
    def vocabulary(self) -> HFTokenizerVocabulary:
        path = self._path_fn()
        with self._lock:
            if self._vocab is None or path != self._path:
                self._vocab, self._path = HFTokenizerVocabulary(path), path
            return self._vocab

    @property
    def eos_id(self):
        return self.vocabulary.eos_id

    @property
    def unk_id(self):
        return self.vocabulary.unk_id

    @property
    def bos_id(self):
        return self.vocabulary.bos_id

    @property
    def pad_id(self) -> int:
        return self.vocabulary.pad_id

    @property
    def _base_vocab_size(self) -> int:
        return self.vocabulary.vocab_size

    def _encode(self, s):
        return self.vocabulary.encode(s)

    def _decode(self, ids):
        return self.vocabulary.decode(ids)

    def _encode_tf(self, s):
        return self.vocabulary.encode_tf(s)

    def _decode_tf(self, ids):
        return self.vocabulary.decode_tf(ids)

    def __eq__(self, other) -> bool:
        if isinstance(other, DeferredVocabulary):
            other = other.vocabulary
        return self.vocabulary == other

    def __hash__(self) -> int:
        return hash(self.vocabulary)

    def __repr__(self) -> str:
        return f"DeferredVocabulary({self._vocab!r})" if self._vocab else "DeferredVocabulary(<not opened>)"
