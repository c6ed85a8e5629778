"""HF BLOOM checkpoints (config.json + safetensors) to and from our parameter tree.

`load_bloom(path)` reads one `model.safetensors` or a sharded checkpoint with its
`model.safetensors.index.json`, with the `transformer.`-prefixed names of `BloomForCausalLM` or the
bare names of `BloomModel` (the published BLOOM-176B: 72 bf16 shards, bare names, no `lm_head`).
It streams one tensor at a time, so host memory peaks near one shard plus the output; with a mesh
every parameter is assembled directly into its sharded form (each host holds only its own slices).

`save_bloom(config, params, path)` writes a directory that
`transformers.BloomForCausalLM.from_pretrained` loads.

Layouts (ours <- HF, L = layer axis stacked by nn.scan, E = hidden, H = heads, D = head_dim):
  query_key_value.kernel [L, E, H, 3, D] <- weight [H*3*D, E]   (BLOOM interleaves q, k, v per head)
  dense.kernel           [L, H, D, E]    <- weight [E, H*D]
  dense_h_to_4h.kernel   [L, E, 4E]      <- weight [4E, E]
  dense_4h_to_h.kernel   [L, 4E, E]      <- weight [E, 4E]
  LayerNorm scale/bias   <- weight/bias; word_embeddings.embedding [V, E] <- weight [V, E]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any, Callable, Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mmst_jax.models.bloom import DTYPES, BloomConfig, BloomConfigError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
_LAYER = re.compile(r"^h\.(\d+)\.(.+)$")


class HFCheckpointError(ValueError):
    """An HF checkpoint that cannot be read as the BLOOM its config describes."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    """How one HF tensor maps onto one leaf of our tree."""

    path: tuple[str, ...]  # our leaf
    hf_shape: Callable[[BloomConfig], tuple[int, ...]]
    to_ours: Callable[[np.ndarray, BloomConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, BloomConfig], np.ndarray]


def _same(x, cfg):
    return x


def _transpose(x, cfg):
    return x.T


def _qkv_kernel_to_ours(w, cfg):  # [H*3*D, E] -> [E, H, 3, D]
    return w.reshape(cfg.n_head, 3, cfg.head_dim, cfg.hidden_size).transpose(3, 0, 1, 2)


def _qkv_kernel_to_hf(k, cfg):  # [E, H, 3, D] -> [H*3*D, E]
    return k.transpose(1, 2, 3, 0).reshape(3 * cfg.hidden_size, cfg.hidden_size)


def _qkv_bias_to_ours(b, cfg):
    return b.reshape(cfg.n_head, 3, cfg.head_dim)


def _qkv_bias_to_hf(b, cfg):
    return b.reshape(3 * cfg.hidden_size)


def _dense_kernel_to_ours(w, cfg):  # [E, H*D] -> [H, D, E]
    return w.T.reshape(cfg.n_head, cfg.head_dim, cfg.hidden_size)


def _dense_kernel_to_hf(k, cfg):  # [H, D, E] -> [E, H*D]
    return k.reshape(cfg.hidden_size, cfg.hidden_size).T


def _ln(prefix: tuple[str, ...]) -> dict[str, _Entry]:
    e = lambda c: (c.hidden_size,)
    return {"weight": _Entry(prefix + ("scale",), e, _same, _same),
            "bias": _Entry(prefix + ("bias",), e, _same, _same)}


_GLOBAL = {
    "word_embeddings.weight": _Entry(("word_embeddings", "embedding"),
                                     lambda c: (c.vocab_size, c.hidden_size), _same, _same),
    **{f"word_embeddings_layernorm.{k}": v for k, v in _ln(("word_embeddings_layernorm",)).items()},
    **{f"ln_f.{k}": v for k, v in _ln(("ln_f",)).items()},
}
_PER_LAYER = {
    **{f"input_layernorm.{k}": v for k, v in _ln(("h", "input_layernorm")).items()},
    **{f"post_attention_layernorm.{k}": v for k, v in _ln(("h", "post_attention_layernorm")).items()},
    "self_attention.query_key_value.weight": _Entry(
        ("h", "self_attention", "query_key_value", "kernel"),
        lambda c: (3 * c.hidden_size, c.hidden_size), _qkv_kernel_to_ours, _qkv_kernel_to_hf),
    "self_attention.query_key_value.bias": _Entry(
        ("h", "self_attention", "query_key_value", "bias"),
        lambda c: (3 * c.hidden_size,), _qkv_bias_to_ours, _qkv_bias_to_hf),
    "self_attention.dense.weight": _Entry(
        ("h", "self_attention", "dense", "kernel"),
        lambda c: (c.hidden_size, c.hidden_size), _dense_kernel_to_ours, _dense_kernel_to_hf),
    "self_attention.dense.bias": _Entry(
        ("h", "self_attention", "dense", "bias"), lambda c: (c.hidden_size,), _same, _same),
    "mlp.dense_h_to_4h.weight": _Entry(
        ("h", "mlp", "dense_h_to_4h", "kernel"),
        lambda c: (4 * c.hidden_size, c.hidden_size), _transpose, _transpose),
    "mlp.dense_h_to_4h.bias": _Entry(
        ("h", "mlp", "dense_h_to_4h", "bias"), lambda c: (4 * c.hidden_size,), _same, _same),
    "mlp.dense_4h_to_h.weight": _Entry(
        ("h", "mlp", "dense_4h_to_h", "kernel"),
        lambda c: (c.hidden_size, 4 * c.hidden_size), _transpose, _transpose),
    "mlp.dense_4h_to_h.bias": _Entry(
        ("h", "mlp", "dense_4h_to_h", "bias"), lambda c: (c.hidden_size,), _same, _same),
}


def expected_names(config: BloomConfig) -> list[str]:
    """Every bare HF tensor name of a BLOOM with this config."""
    names = list(_GLOBAL)
    for i in range(config.n_layer):
        names += [f"h.{i}.{n}" for n in _PER_LAYER]
    return names


def _entry(name: str) -> tuple[_Entry, int | None]:
    """The mapping of a bare HF name and its layer (None for global tensors)."""
    if name in _GLOBAL:
        return _GLOBAL[name], None
    m = _LAYER.match(name)
    if m and m.group(2) in _PER_LAYER:
        return _PER_LAYER[m.group(2)], int(m.group(1))
    raise KeyError(name)


def our_shapes(config: BloomConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shape of every leaf of our tree (layer-stacked leaves lead with n_layer)."""
    shapes = {}
    for table, layered in ((_GLOBAL, False), (_PER_LAYER, True)):
        for entry in table.values():
            shape = entry.to_ours(np.empty(entry.hf_shape(config), np.int8), config).shape
            shapes[entry.path] = ((config.n_layer,) + shape) if layered else shape
    return shapes


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class _Checkpoint:
    """The tensor names of an HF directory, the file holding each, and their checks."""

    def __init__(self, path: str, config: BloomConfig):
        self.path = path
        index_path = os.path.join(path, INDEX_FILE)
        single_path = os.path.join(path, SINGLE_FILE)
        if os.path.exists(index_path):
            try:
                with open(index_path) as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise HFCheckpointError(f"{index_path} is not a safetensors index (needs a 'weight_map'): "
                                      f"{e}; restore it from the checkpoint's source") from e
            missing = sorted({f for f in weight_map.values() if not os.path.exists(os.path.join(path, f))})
            if missing:
                raise HFCheckpointError(
                    f"{index_path} names {len(missing)} shard(s) that are not in {path}: "
                    f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}; download the missing "
                    "shard files into the directory (or fix the index)")
        elif os.path.exists(single_path):
            with safe_open(single_path, framework="numpy") as f:
                weight_map = {name: SINGLE_FILE for name in f.keys()}
        else:
            raise HFCheckpointError(f"{path} has neither {SINGLE_FILE} nor {INDEX_FILE}: an HF BLOOM "
                                  "directory needs safetensors weights (convert .bin files with "
                                  "transformers' save_pretrained(safe_serialization=True))")
        self.files: dict[str, str] = {}  # bare name -> file
        self.stored_name: dict[str, str] = {}  # bare name -> name in the file
        for name, file in weight_map.items():
            bare = name[len("transformer."):] if name.startswith("transformer.") else name
            if bare == "lm_head.weight":
                continue  # tied to the word embeddings
            self.files[bare] = file
            self.stored_name[bare] = name
        expected = set(expected_names(config))
        missing = sorted(expected - set(self.files))
        unknown = sorted(set(self.files) - expected)
        if missing:
            raise HFCheckpointError(
                f"{path} lacks {len(missing)} tensor(s) that config.json (n_layer={config.n_layer}) "
                f"implies, e.g. {missing[:3]}; the weights and config.json belong to different models "
                "or the checkpoint is incomplete")
        if unknown:
            raise HFCheckpointError(
                f"{path} has tensor(s) that a BLOOM with this config.json does not have, e.g. "
                f"{unknown[:3]}; check that config.json (n_layer={config.n_layer}) matches the weights")

    def read(self, name: str, config: BloomConfig) -> np.ndarray:
        """One tensor, shape-checked against config.json."""
        file = os.path.join(self.path, self.files[name])
        with safe_open(file, framework="numpy") as f:
            tensor = f.get_tensor(self.stored_name[name])
        entry, _ = _entry(name)
        if tuple(tensor.shape) != entry.hf_shape(config):
            raise HFCheckpointError(
                f"{file}: tensor {self.stored_name[name]!r} has shape {tuple(tensor.shape)} but "
                f"config.json implies {entry.hf_shape(config)}; the weights and config.json belong to "
                "different models: use the config.json that came with these weights")
        return tensor

    def dtype(self) -> np.dtype:
        name = "word_embeddings.weight"
        with safe_open(os.path.join(self.path, self.files[name]), framework="numpy") as f:
            stored = f.get_slice(self.stored_name[name]).get_dtype()
        if stored not in _SAFETENSORS_DTYPES:
            raise HFCheckpointError(f"{self.files[name]} stores weights as {stored}; BLOOM weights must be "
                                  f"one of {sorted(_SAFETENSORS_DTYPES)}")
        return np.dtype(DTYPES[_SAFETENSORS_DTYPES[stored]])

    def by_file(self) -> Iterator[tuple[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        for name, file in self.files.items():
            groups.setdefault(file, []).append(name)
        return iter(sorted(groups.items()))


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load_bloom(path: str | os.PathLike, *, mesh=None, dtype: str | None = None,
               rules=None) -> tuple[BloomConfig, dict[str, Any]]:
    """Reads an HF BLOOM directory; returns (config, params).

    Without a mesh the params are host numpy arrays; with a mesh they are global jax arrays placed
    by the logical axis rules (default: `partitioning.DEFAULT_RULES`). `dtype` ('float32',
    'bfloat16', …) casts the weights; by default they keep the checkpoint's dtype, which the
    returned config records as its `param_dtype`.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise HFCheckpointError(f"{path} is not a directory: load_bloom expects an HF BLOOM directory "
                              "(config.json + safetensors)")
    config = BloomConfig.from_hf(path)
    ckpt = _Checkpoint(path, config)
    if dtype is None:
        dtype = ckpt.dtype().name
    if dtype not in DTYPES:
        raise BloomConfigError(f"dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    config = dataclasses.replace(config, param_dtype=dtype)
    np_dtype = np.dtype(DTYPES[dtype])
    shapes = our_shapes(config)

    if mesh is None:
        # Stream file by file, tensor by tensor, into preallocated outputs.
        out = {p: np.empty(s, np_dtype) for p, s in shapes.items()}
        for _, names in ckpt.by_file():
            for name in names:
                entry, layer = _entry(name)
                value = entry.to_ours(ckpt.read(name, config), config)
                (out[entry.path] if layer is None else out[entry.path][layer])[...] = value
        params: dict[str, Any] = {}
        for p, v in out.items():
            _set(params, p, v)
        return config, params

    import jax

    from mmst_jax import sharding
    from mmst_jax.models.shardings import param_shardings

    shardings = param_shardings(config, mesh, rules)
    sources: dict[tuple[str, ...], list[tuple[str, int | None]]] = {}
    for name in ckpt.files:
        entry, layer = _entry(name)
        sources.setdefault(entry.path, []).append((name, layer))
    params = {}
    for leaf, names in sources.items():
        leaf_sharding = shardings
        for key in leaf:
            leaf_sharding = leaf_sharding[key]

        def fill(slices, names=names):
            for name, layer in names:
                value = _entry(name)[0].to_ours(ckpt.read(name, config), config).astype(np_dtype)
                for index, buf in slices:
                    if layer is None:
                        buf[...] = value[index]
                        continue
                    start, stop, _ = index[0].indices(config.n_layer)
                    if start <= layer < stop:
                        buf[layer - start] = value[index[1:]]

        _set(params, leaf, sharding.shard_from_host_slices(shapes[leaf], np_dtype, leaf_sharding, fill))
    jax.block_until_ready(params)
    return config, params


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def save_bloom(config: BloomConfig, params: dict[str, Any], path: str | os.PathLike, *,
               max_shard_bytes: int = 2 * 1024**3, dtype: str | None = None) -> None:
    """Writes an HF BLOOM directory (config.json, safetensors shards and index) atomically.

    Tensors use BloomForCausalLM's `transformer.` names; the LM head is tied, so it is not stored.
    `dtype` casts on the way out (default: the parameters' own dtype).
    """
    path = os.fspath(path)
    shapes = our_shapes(config)
    for leaf, shape in shapes.items():
        try:
            got = tuple(np.shape(_get(params, leaf)))
        except (KeyError, TypeError) as e:
            raise HFCheckpointError(f"params lack {'/'.join(leaf)}: not a BLOOM parameter tree") from e
        if got != shape:
            raise HFCheckpointError(f"params {'/'.join(leaf)} has shape {got} but config implies {shape}")
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for name in expected_names(config):
            entry, layer = _entry(name)
            leaf = _get(params, entry.path)
            value = np.asarray(leaf if layer is None else leaf[layer])
            if dtype is not None:
                value = value.astype(DTYPES[dtype])
            yield "transformer." + name, np.ascontiguousarray(entry.to_hf(value, config))

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    files: list[str] = []
    weight_map: dict[str, str] = {}
    total = 0

    def flush():
        nonlocal size
        if shards[-1]:
            name = f"shard-{len(files):05d}.safetensors"
            save_file(shards[-1], os.path.join(tmp, name), metadata={"format": "pt"})
            files.append(name)
            for tensor_name in shards[-1]:
                weight_map[tensor_name] = name
            shards[-1] = {}
            size = 0

    for name, value in tensors():
        if size and size + value.nbytes > max_shard_bytes:
            flush()
        shards[-1][name] = value
        size += value.nbytes
        total += value.nbytes
    flush()
    if len(files) == 1:
        os.rename(os.path.join(tmp, files[0]), os.path.join(tmp, SINGLE_FILE))
    else:
        final = {f: f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i, f in enumerate(files)}
        for old, new in final.items():
            os.rename(os.path.join(tmp, old), os.path.join(tmp, new))
        with open(os.path.join(tmp, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total},
                       "weight_map": {k: final[v] for k, v in weight_map.items()}}, f, indent=2)
    hf_config = config.to_hf()
    stored = np.dtype(DTYPES[dtype]) if dtype else np.asarray(params["ln_f"]["scale"]).dtype
    hf_config["torch_dtype"] = stored.name
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.rename(tmp, path)
