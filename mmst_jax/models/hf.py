"""HF BLOOM checkpoints (config.json + safetensors) to and from our parameter tree.

`load_bloom(path)` reads one `model.safetensors` or a sharded checkpoint with its
`model.safetensors.index.json`, with the `transformer.`-prefixed names of `BloomForCausalLM` or the
bare names of `BloomModel` (the published BLOOM-176B: 72 bf16 shards, bare names, no `lm_head`).
The directory may be local or `gs://` (no mount): the safetensors headers are read first, then each
tensor as one read of exactly its bytes, one tensor at a time, so host memory peaks near one tensor
plus the output. With a mesh each host reads one contiguous 1/hosts of every tensor's rows (spread
over all devices), and the devices turn that into our layout and sharding; so each host reads about
1/hosts of the checkpoint's bytes (BLOOM-176B on a v4-512: about 5.5 of 352 GB per host).

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
import functools
import json
import os
import re
import shutil
import struct
import tempfile
from typing import Any, Callable, Iterator

import numpy as np
from etils import epath
from safetensors.numpy import save_file

from mmst_jax import storage
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
@dataclasses.dataclass(frozen=True)
class _Stored:
    """Where one tensor lies in its safetensors file: absolute byte offsets, dtype, shape."""

    file: epath.Path
    name: str  # its name in the file
    dtype: str  # safetensors' (F32, BF16, F16)
    shape: tuple[int, ...]
    begin: int
    end: int


class _Checkpoint:
    """The tensor names of an HF directory (local or gs://), the file holding each, and their
    places in those files, from the safetensors headers (8 bytes of length, then JSON): a tensor,
    or a range of its rows, is then one read of exactly its bytes."""

    def __init__(self, path: epath.Path, config: BloomConfig):
        self.path = path
        self._headers: dict[str, dict[str, _Stored]] = {}
        with storage.naming(path):
            present = {p.name for p in path.iterdir()}  # one listing, not one request per shard
            if INDEX_FILE in present:
                index_path = path / INDEX_FILE
                try:
                    weight_map = json.loads(index_path.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise HFCheckpointError(f"{index_path} is not a safetensors index (needs a 'weight_map'): "
                                            f"{e}; restore it from the checkpoint's source") from e
                missing = sorted({f for f in weight_map.values() if f not in present})
                if missing:
                    raise HFCheckpointError(
                        f"{index_path} names {len(missing)} shard(s) that are not in {path}: "
                        f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}; download the missing "
                        "shard files into the directory (or fix the index)")
            elif SINGLE_FILE in present:
                weight_map = {name: SINGLE_FILE for name in self._header(SINGLE_FILE)}
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

    def _header(self, file: str) -> dict[str, _Stored]:
        """The tensors of one safetensors file, from its header (two small reads, once)."""
        if file in self._headers:
            return self._headers[file]
        path = self.path / file
        (length,) = struct.unpack("<Q", storage.read_range(path, 0, 8))
        if length > 100 * 2**20:
            raise HFCheckpointError(f"{path}: a safetensors header of {length} bytes; the file is damaged")
        try:
            header = json.loads(storage.read_range(path, 8, 8 + length))
        except json.JSONDecodeError as e:
            raise HFCheckpointError(f"{path}: the safetensors header is not JSON ({e}); the file is damaged") from e
        start = 8 + length
        self._headers[file] = {name: _Stored(path, name, t["dtype"], tuple(t["shape"]),
                                             start + t["data_offsets"][0], start + t["data_offsets"][1])
                               for name, t in header.items() if name != "__metadata__"}
        return self._headers[file]

    def stored(self, name: str, config: BloomConfig) -> _Stored:
        """Where a tensor lies, shape-checked against config.json."""
        stored = self._header(self.files[name])[self.stored_name[name]]
        entry, _ = _entry(name)
        if stored.shape != entry.hf_shape(config):
            raise HFCheckpointError(
                f"{stored.file}: tensor {stored.name!r} has shape {stored.shape} but "
                f"config.json implies {entry.hf_shape(config)}; the weights and config.json belong to "
                "different models: use the config.json that came with these weights")
        if stored.dtype not in _SAFETENSORS_DTYPES:
            raise HFCheckpointError(f"{stored.file}: tensor {stored.name!r} is stored as {stored.dtype}; BLOOM "
                                    f"weights must be one of {sorted(_SAFETENSORS_DTYPES)}")
        return stored

    def read(self, name: str, config: BloomConfig, rows: tuple[int, int] | None = None) -> np.ndarray:
        """One tensor, or rows [start, stop) of its first axis: one read of exactly those bytes."""
        stored = self.stored(name, config)
        dtype = np.dtype(DTYPES[_SAFETENSORS_DTYPES[stored.dtype]])
        start, stop = rows or (0, stored.shape[0])
        row_bytes = int(np.prod(stored.shape[1:], dtype=np.int64)) * dtype.itemsize
        data = storage.read_range(stored.file, stored.begin + start * row_bytes, stored.begin + stop * row_bytes)
        return np.frombuffer(data, dtype).reshape((stop - start,) + stored.shape[1:])

    def dtype(self) -> np.dtype:
        stored = self._header(self.files["word_embeddings.weight"])[self.stored_name["word_embeddings.weight"]]
        if stored.dtype not in _SAFETENSORS_DTYPES:
            raise HFCheckpointError(f"{self.files['word_embeddings.weight']} stores weights as {stored.dtype}; "
                                    f"BLOOM weights must be one of {sorted(_SAFETENSORS_DTYPES)}")
        return np.dtype(DTYPES[_SAFETENSORS_DTYPES[stored.dtype]])

    def by_file(self) -> Iterator[tuple[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        for name, file in self.files.items():
            groups.setdefault(file, []).append(name)
        return iter(sorted(groups.items()))


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load_bloom(path: epath.PathLike, *, mesh=None, dtype: str | None = None,
               rules=None) -> tuple[BloomConfig, dict[str, Any]]:
    """Reads an HF BLOOM directory, local or gs://; returns (config, params).

    Without a mesh the params are host numpy arrays; with a mesh they are global jax arrays placed
    by the logical axis rules (default: `sharding.DEFAULT_RULES`), and each host reads only its
    share of every tensor (`_read_spread`). `dtype` ('float32', 'bfloat16', …) casts the weights;
    by default they keep the checkpoint's dtype, which the returned config records as its
    `param_dtype`.
    """
    path = epath.Path(path)
    with storage.naming(path):
        if not path.is_dir():
            storage.check_bucket(path)  # a missing or refused bucket says so
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
    return config, _load_onto_mesh(ckpt, config, mesh, rules, np_dtype)


def _load_onto_mesh(ckpt: _Checkpoint, config: BloomConfig, mesh, rules, np_dtype) -> dict[str, Any]:
    """Every leaf in its sharding: each HF tensor is read spread over the hosts (`_read_spread`),
    then turned into our layout, cast and resharded on the devices (one compiled program per leaf;
    a layer is written into its stacked leaf in place)."""
    import jax
    import jax.numpy as jnp

    from mmst_jax.models.shardings import param_shardings

    shardings = param_shardings(config, mesh, rules)
    shapes = our_shapes(config)
    sources: dict[tuple[str, ...], list[tuple[str, int | None]]] = {}
    for name in ckpt.files:
        entry, layer = _entry(name)
        sources.setdefault(entry.path, []).append((name, layer))
    params: dict[str, Any] = {}
    for leaf, names in sorted(sources.items()):
        target = shardings
        for key in leaf:
            target = target[key]
        entry = _entry(names[0][0])[0]
        convert = functools.partial(lambda x, e: e.to_ours(x, config).astype(np_dtype), e=entry)
        if names[0][1] is None:
            (name, _), = names
            value = jax.jit(convert, out_shardings=target)(_read_spread(ckpt, name, config, mesh))
        else:
            value = jax.jit(lambda: jnp.zeros(shapes[leaf], np_dtype), out_shardings=target)()
            put = jax.jit(lambda buf, x, i: buf.at[i].set(convert(x)), donate_argnums=0, out_shardings=target)
            for name, layer in sorted(names, key=lambda n: n[1]):
                value = put(value, _read_spread(ckpt, name, config, mesh), layer)
        _set(params, leaf, value)
    jax.block_until_ready(params)
    return params


def _read_spread(ckpt: _Checkpoint, name: str, config: BloomConfig, mesh):
    """One HF tensor as an array whose rows are spread over the mesh's devices, hosts in order: each
    of the mesh's hosts reads one contiguous 1/hosts of the tensor's bytes (a tensor whose rows do
    not divide is spread over the hosts, or, failing that, read whole by each)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from mmst_jax import sharding

    stored = ckpt.stored(name, config)
    rows = stored.shape[0]
    devices = sorted(mesh.devices.flat, key=lambda d: (d.process_index, d.id))
    hosts = len({d.process_index for d in devices})
    read_mesh = Mesh(np.array(devices).reshape(hosts, len(devices) // hosts), ("hosts", "local"))
    if rows % len(devices) == 0:
        spec = PartitionSpec(("hosts", "local"))
    elif rows % hosts == 0:
        spec = PartitionSpec("hosts")
    else:
        spec = PartitionSpec()
    dtype = np.dtype(DTYPES[_SAFETENSORS_DTYPES[stored.dtype]])

    def fill(slices):
        spans = sorted({index[0].indices(rows)[:2] for index, _ in slices})
        start, stop = spans[0][0], spans[-1][1]
        if sum(b - a for a, b in spans) == stop - start:  # contiguous: one read for all of them
            block = ckpt.read(name, config, (start, stop))
            for index, buf in slices:
                a, b = index[0].indices(rows)[:2]
                buf[...] = block[a - start:b - start]
            return
        for index, buf in slices:
            buf[...] = ckpt.read(name, config, index[0].indices(rows)[:2])

    return sharding.shard_from_host_slices(stored.shape, dtype, NamedSharding(read_mesh, spec), fill)


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
    `dtype` casts on the way out (default: the parameters' own dtype). A gs:// `path` is written
    locally first, then uploaded file by file.
    """
    if storage.is_remote(path):
        with tempfile.TemporaryDirectory() as local:
            save_bloom(config, params, os.path.join(local, "hf"), max_shard_bytes=max_shard_bytes, dtype=dtype)
            storage.copy_tree(os.path.join(local, "hf"), path)
        return
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
