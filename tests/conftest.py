"""Shared test fixtures: the public datasets beside the checkout, a tokenizer trained on the spot, and a
GCS emulator (tests/gcs_emulator.py) for gs:// paths.

The session keeps one JAX compilation cache (JAX's own persistent cache) for this process and every
`mmst` process the tests start: dozens of them compile the same tiny programs.
"""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

# gs:// goes through fsspec's gcsfs in the project (mmst_jax.storage); the same here, before any use.
os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Tests read the public datasets from ../shared/data unless MMST_DATA_DIR names another place.
os.environ.setdefault("MMST_DATA_DIR", str(PROJECT_ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config.jax_cache_dir = tempfile.mkdtemp(prefix="mmst-test-jax-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config.jax_cache_dir
    # every program, however small or quick to compile (JAX keeps only those over 1 s by default)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_collection_modifyitems(config, items):
    """The modules holding slow tests first, in their own order: the suite is split over two
    workers by module (pyproject.toml's `-n 2 --dist loadfile`), so the longest start early
    instead of last."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable


def pytest_unconfigure(config):
    if getattr(config, "jax_cache_dir", None):
        shutil.rmtree(config.jax_cache_dir, ignore_errors=True)


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


@pytest.fixture(scope="session")
def tiny_hf_checkpoint(tmp_path_factory, bpe_tokenizer_dir) -> pathlib.Path:
    """A random tiny BLOOM in HF format with the session's tokenizer.json (vocabulary 1024)."""
    from bloom_reference import write_tiny_hf_checkpoint

    out = tmp_path_factory.mktemp("tiny_hf_bloom")
    return pathlib.Path(write_tiny_hf_checkpoint(out, bpe_tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def micro_reference(tmp_path_factory) -> pathlib.Path:
    """An uninterrupted `mmst run` of the micro configuration, the run every interrupted, damaged or
    gs:// run of it is compared with (tests copy it before they change anything)."""
    from micro_run import mmst_run

    run_dir = tmp_path_factory.mktemp("mmst") / "reference"
    proc = mmst_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step/s" not in proc.stderr and "sample/s" not in proc.stderr  # --quiet: no progress bars
    return run_dir


class GCS:
    """The session's GCS emulator: `bucket` exists, `gate` is the endpoint every client uses (it can
    be told to refuse), `new_gate()` another endpoint onto the same storage (its own byte count)."""

    def __init__(self, emulator, gate, bucket: str):
        self.emulator, self.gate, self.bucket = emulator, gate, bucket
        self.gates = [gate]

    def new_gate(self):
        from gcs_emulator import Gate

        gate = Gate(self.emulator.url)
        gate.start()
        self.gates.append(gate)
        return gate


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """fake-gcs-server on a free local port, started once for the session and stopped after it;
    this process and every process it starts reach it through STORAGE_EMULATOR_HOST and
    TENSORSTORE_GCS_HTTP_URL (a test token instead of credentials)."""
    from gcs_emulator import Emulator, Gate

    emulator = Emulator(str(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"))
    emulator.start()
    gate = Gate(emulator.url)
    gate.start()
    saved = {k: os.environ.get(k) for k in gate.environment()}
    os.environ.update(gate.environment())
    emulator.create_bucket("mmst-test")
    state = GCS(emulator, gate, "mmst-test")
    try:
        yield state
    finally:
        for g in state.gates:
            g.stop()
        emulator.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
