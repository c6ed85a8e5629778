"""Shared test fixtures: the public datasets beside the checkout and a tokenizer trained on the spot."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Tests read the public datasets from ../shared/data unless MMST_DATA_DIR names another place.
os.environ.setdefault("MMST_DATA_DIR", str(PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ["MMST_DATA_DIR"])
    if not path.is_dir():
        pytest.fail(f"public datasets not found at {path}: put shared/ beside the checkout or set MMST_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory, data_dir) -> pathlib.Path:
    """A BLOOM-format byte-level BPE tokenizer (tokenizer.json) trained here on GSM8K text."""
    import json

    from mmst_jax.vocab import train_bpe_tokenizer

    texts = []
    with open(data_dir / "gsm8k" / "train.jsonl") as f:
        for i, line in enumerate(f):
            if i >= 2000:
                break
            record = json.loads(line)
            texts += [record["question"], record["answer"]]
    texts += ["def solution():\n    x = 3\n    return x * 4\n", "The answer is 12."] * 50
    out = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(texts, vocab_size=1024, path=out / "tokenizer.json")
    return out
