"""Model directories: orbax (as `mmst convert --to orbax` and fine-tuning write them) or HF.

An orbax model directory holds `config.json` (HF form, plus `torch_dtype`) and `params/` (an orbax
PyTree checkpoint); it may be local or `gs://`. An HF directory holds `config.json` and safetensors
shards (models.hf). Either is read whole onto one device, or straight onto a mesh.

    save_orbax(config, params, path)
    config = read_config(path)                       # either kind
    config, params = load_model_dir(path, mesh=mesh, rules=rules)
    model = load_model(path, tokenizer, mesh, rules) # params + the vocabulary that matches them
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from etils import epath

from mmst_jax import storage
from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.shardings import param_shardings


@dataclasses.dataclass
class Model:
    """A model ready to sample: its config, parameters (placed), vocabulary and where it came from."""

    config: BloomConfig
    params: Any
    vocab: Any  # mmst_jax.vocab.HFTokenizerVocabulary
    path: str


def _model_dir(path: epath.PathLike) -> epath.Path:
    """Orbax wants absolute paths; gs:// ones are left as they are."""
    path = os.fspath(path)
    return epath.Path(path if "://" in path else os.path.abspath(path))


def is_orbax(path: epath.PathLike) -> bool:
    return (_model_dir(path) / "params").is_dir()


def read_config(path: epath.PathLike) -> BloomConfig:
    """The BloomConfig of a model directory (orbax or HF), with its stored parameter dtype."""
    config_path = _model_dir(path) / "config.json"
    with storage.naming(config_path):
        raw = json.loads(config_path.read_text())
    return BloomConfig.from_hf(raw, param_dtype=raw.get("torch_dtype", "float32"))


def save_orbax(config: BloomConfig, params, path: epath.PathLike) -> None:
    """Writes params/ and config.json under `path` (orbax writes atomically and finalises; on
    several hosts each writes its own shards and the first writes config.json)."""
    import jax
    import orbax.checkpoint as ocp

    path = _model_dir(path)
    storage.check_bucket(path)
    if not storage.is_remote(path):
        path.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / "params", params, force=True)
    if jax.process_index() == 0:  # written last: a directory with config.json is complete
        storage.write_bytes(path / "config.json",
                            json.dumps(config.to_hf() | {"torch_dtype": config.param_dtype}, indent=2).encode())


def load_orbax(path: epath.PathLike, shardings=None) -> tuple[BloomConfig, Any]:
    """Reads (config, params) written by `save_orbax`; with shardings, restores onto them."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from mmst_jax.models.bloom import init_params

    path = _model_dir(path)
    if not (path / "params").is_dir():
        raise FileNotFoundError(f"{path} has no params/ directory: not a model written by "
                                "`mmst convert --to orbax`")
    config = read_config(path)
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0), 1, 1))
    if shardings is None:  # whole, on this process's first device, whatever mesh wrote it
        shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
                                 abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path / "params", abstract)
    return config, jax.tree.map(jnp.asarray, params)


def load_model_dir(path: epath.PathLike, *, mesh=None, rules=None, dtype=None) -> tuple[BloomConfig, Any]:
    """(config, params) of an orbax or HF model directory; with a mesh, each host reads only the
    slices its devices hold."""
    from mmst_jax.models.hf import load_bloom

    if is_orbax(path):
        shardings = None if mesh is None else param_shardings(read_config(path), mesh, rules)
        return load_orbax(path, shardings)
    return load_bloom(path, mesh=mesh, rules=rules, dtype=dtype)


def load_model(path: epath.PathLike, tokenizer: epath.PathLike, mesh=None, rules=None) -> Model:
    """A model directory and the tokenizer.json that goes with it, checked to fit each other."""
    from mmst_jax.vocab import HFTokenizerVocabulary

    config, params = load_model_dir(path, mesh=mesh, rules=rules)
    vocab = HFTokenizerVocabulary(os.fspath(tokenizer))
    vocab.check_fits_model(config.vocab_size, f"the model at {path}")
    return Model(config, params, vocab, os.fspath(path))
