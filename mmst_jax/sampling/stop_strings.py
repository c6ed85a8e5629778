"""Stop strings, matched on bytes inside the compiled decode loop.

`StopStrings(strings, token_bytes)` turns the strings into an automaton over tokens: a table
[states, vocab] of the matcher's state after each token, so the loop needs one lookup per token and
a stop string is found even when it starts or ends inside a token (or inside a multi-byte UTF-8
character). `token_bytes(tokenizer)` gives the bytes each token adds to the text.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class StopStringError(ValueError):
    """A stop string that cannot work (empty, or never produced by this vocabulary)."""


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id adds to the text (b"" for special tokens).

    `tokenizer`: a `tokenizers.Tokenizer` or anything with one as `.tokenizer` (our vocabulary).
    Exact for byte-level BPE (BLOOM's); otherwise each token decoded on its own.
    """
    import tokenizers

    tok = getattr(tokenizer, "tokenizer", tokenizer)
    size = tok.get_vocab_size(with_added_tokens=True)
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    if isinstance(tok.decoder, tokenizers.decoders.ByteLevel):
        # GPT-2's bytes <-> printable characters table, inverted.
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
        chars = printable + [256 + i for i in range(256 - len(printable))]
        byte_of = dict(zip(map(chr, chars), printable + sorted(set(range(256)) - set(printable))))
        out = []
        for i in range(size):
            piece = tok.id_to_token(i)
            ok = i not in special and piece is not None and all(c in byte_of for c in piece)
            out.append(bytes(byte_of[c] for c in piece) if ok else b"")
        return out
    return [b"" if i in special else tok.decode([i]).encode("utf-8") for i in range(size)]


class StopStrings:
    """Detects stop strings in generated tokens, on device, one table lookup per token.

    table [states, vocab] int32: the matcher's state after reading a token's bytes in a state;
    state 0 is "nothing matched yet", states >= `num_live` mean a stop string has been produced.
    """

    def __init__(self, strings: Sequence[str], token_bytes: Sequence[bytes]):
        if isinstance(strings, str):
            strings = [strings]
        strings = list(strings)
        for s in strings:
            if not isinstance(s, str) or not s:
                raise StopStringError(f"stop string {s!r} can never be detected: give non-empty strings")
        self.strings = tuple(strings)
        patterns = [s.encode("utf-8") for s in strings]
        # A pattern containing another one always stops at the other first: drop it.
        patterns = sorted({p for p in patterns if not any(q != p and q in p for q in patterns)})
        prefixes = sorted({p[:i] for p in patterns for i in range(len(p))}, key=lambda x: (len(x), x))
        state_of = {p: i for i, p in enumerate(prefixes)}
        live = len(prefixes)
        byte_table = np.zeros((live + len(patterns), 256), np.int32)
        for i, text in enumerate(prefixes):
            for b in range(256):
                t = text + bytes([b])
                hit = [j for j, p in enumerate(patterns) if t.endswith(p)]
                if hit:
                    byte_table[i, b] = live + hit[0]
                else:  # the longest suffix of t that starts some pattern
                    byte_table[i, b] = next(state_of[t[k:]] for k in range(len(t) + 1) if t[k:] in state_of)
        byte_table[live:] = np.arange(live, live + len(patterns))[:, None]  # a match is final

        # Run every token's bytes from every state at once (tokens sorted by length).
        lengths = np.array([len(b) for b in token_bytes])
        width = max(int(lengths.max()), 1)
        padded = np.zeros((len(token_bytes), width), np.int32)
        for i, b in enumerate(token_bytes):
            padded[i, :len(b)] = np.frombuffer(b, np.uint8)
        table = np.tile(np.arange(byte_table.shape[0], dtype=np.int32)[:, None], (1, len(token_bytes)))
        for j in range(width):
            active = np.nonzero(lengths > j)[0]
            table[:, active] = byte_table[table[:, active], padded[active, j][None, :]]
        self.table = table  # [live + len(patterns), vocab]
        self.num_live = live

        reachable, frontier = {0}, [0]
        while frontier:
            new = set(np.unique(table[frontier]).tolist()) - reachable
            reachable |= new
            frontier = sorted(new)
        for j, p in enumerate(patterns):
            if live + j not in reachable:
                raise StopStringError(f"stop string {p.decode('utf-8')!r} can never be detected: no sequence "
                                    "of this vocabulary's tokens produces it; use text the tokenizer can write")

    @property
    def device_table(self) -> np.ndarray:
        """[live + 1, vocab]: the table with every match state merged into the last one."""
        return np.minimum(self.table[:self.num_live + 1], self.num_live)

    def truncate(self, text: str) -> str:
        """`text` cut before the earliest occurrence of any stop string."""
        cut = min((i for i in (text.find(s) for s in self.strings) if i >= 0), default=len(text))
        return text[:cut]
