"""HF checkpoint import/export: sharded and bare-name checkpoints, memory, mesh placement, errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bloom_reference import random_hf_bloom
from mmst_jax.models.bloom import BloomConfig, BloomConfigError
from mmst_jax.models.hf import HFCheckpointError, load_bloom, our_shapes, save_bloom


def run_python(code: str, **env) -> str:
    """Runs code in a fresh interpreter (own memory accounting, own XLA flags); returns stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def random_params(config: BloomConfig, seed: int = 0, dtype=np.float32):
    rs = np.random.RandomState(seed)
    params = {}
    for path, shape in our_shapes(config).items():
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = (rs.standard_normal(shape) * 0.02).astype(dtype)
    return params


def flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flatten(v, prefix + (k,))
    else:
        yield prefix, tree


def test_sharded_load_peaks_near_one_shard_plus_the_output(tmp_path):
    config = BloomConfig(vocab_size=8192, hidden_size=512, n_layer=10, n_head=8)
    params = random_params(config)
    save_bloom(config, params, tmp_path / "ckpt", max_shard_bytes=14 * 2**20)
    shards = sorted(f for f in os.listdir(tmp_path / "ckpt") if f.endswith(".safetensors"))
    assert len(shards) >= 10
    largest_shard = max(os.path.getsize(tmp_path / "ckpt" / f) for f in shards)
    output = sum(v.nbytes for _, v in flatten(params))
    total_files = sum(os.path.getsize(tmp_path / "ckpt" / f) for f in shards)

    stdout = run_python(f"""
        import json
        from mmst_jax.models.hf import load_bloom

        def status_kib(field):  # VmHWM (peak RSS) belongs to this process image, unlike ru_maxrss
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

        before = status_kib("VmRSS")
        config, params = load_bloom({str(tmp_path / "ckpt")!r})
        print(json.dumps({{"increase": (status_kib("VmHWM") - before) * 1024}}))
    """)
    increase = json.loads(stdout.strip().splitlines()[-1])["increase"]
    # A loader that read every shard before converting would need about output + all files
    # (2x output); streaming needs the output plus about one tensor of its largest shard.
    assert increase <= output + 2 * largest_shard + 24 * 2**20, (increase, output, largest_shard)
    assert increase < output + total_files - 4 * largest_shard
    _, loaded = load_bloom(tmp_path / "ckpt")
    for path, value in flatten(params):
        node = loaded
        for key in path:
            node = node[key]
        np.testing.assert_array_equal(node, value)


def test_bare_bloommodel_names_in_bf16_shards_without_lm_head(tmp_path):
    """The published BLOOM-176B layout: BloomModel names, bf16, many shards, no lm_head."""
    import transformers

    hf = random_hf_bloom(4, n_layer=2, seed=3).to(torch.bfloat16)
    hf.transformer.save_pretrained(tmp_path / "bare", max_shard_size="20KB")
    files = os.listdir(tmp_path / "bare")
    assert "model.safetensors.index.json" in files
    index = json.loads((tmp_path / "bare" / "model.safetensors.index.json").read_text())
    assert not any(k.startswith("transformer.") or k.startswith("lm_head") for k in index["weight_map"])
    config, params = load_bloom(tmp_path / "bare")
    assert config.param_dtype == "bfloat16"
    assert params["word_embeddings"]["embedding"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(
        params["word_embeddings"]["embedding"].astype(np.float32),
        hf.transformer.word_embeddings.weight.detach().float().numpy())
    # Back to HF and into transformers: identical tensors.
    save_bloom(config, params, tmp_path / "back")
    back = transformers.BloomForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.bfloat16)
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_load_onto_a_mesh_places_every_parameter_by_the_rules(tmp_path):
    config = BloomConfig(vocab_size=256, hidden_size=64, n_layer=3, n_head=4)
    save_bloom(config, random_params(config, seed=1), tmp_path / "ckpt", max_shard_bytes=40_000)
    stdout = run_python(f"""
        import json, numpy as np, jax
        from mmst_jax.models.hf import load_bloom
        from mmst_jax.sharding import make_mesh
        mesh = make_mesh((1, 2, 2))
        _, sharded = load_bloom({str(tmp_path / "ckpt")!r}, mesh=mesh)
        _, host = load_bloom({str(tmp_path / "ckpt")!r})
        same = all(np.array_equal(np.asarray(a), b) for a, b in
                   zip(jax.tree.leaves(sharded), jax.tree.leaves(host)))
        qkv = sharded["h"]["self_attention"]["query_key_value"]["kernel"]
        print(json.dumps({{"same": same, "spec": [str(s) for s in qkv.sharding.spec],
                          "shard": list(qkv.addressable_shards[0].data.shape)}}))
    """, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["same"]
    # [layers, embed, heads, 3, head_dim]: embed over fsdp, heads over tensor.
    assert result["spec"][:3] == ["None", "fsdp", "tensor"]
    assert result["shard"] == [3, 32, 2, 3, 16]


@pytest.fixture
def small_checkpoint(tmp_path):
    config = BloomConfig(vocab_size=64, hidden_size=16, n_layer=2, n_head=2)
    save_bloom(config, random_params(config), tmp_path / "ckpt", max_shard_bytes=4000)
    return tmp_path / "ckpt"


def test_missing_shard_is_named(small_checkpoint):
    index = json.loads((small_checkpoint / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    os.remove(small_checkpoint / victim)
    with pytest.raises(HFCheckpointError, match=f"{victim}.*download the missing"):
        load_bloom(small_checkpoint)


def test_shapes_contradicting_config_json_are_named(small_checkpoint):
    config = json.loads((small_checkpoint / "config.json").read_text())
    config["vocab_size"] = 100
    (small_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(HFCheckpointError, match=r"word_embeddings.weight.*\(64, 16\).*\(100, 16\).*config.json"):
        load_bloom(small_checkpoint)


def test_layer_count_contradicting_config_json_is_named(small_checkpoint):
    config = json.loads((small_checkpoint / "config.json").read_text())
    config["n_layer"] = 3
    (small_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(HFCheckpointError, match=r"lacks .* tensor\(s\).*n_layer=3"):
        load_bloom(small_checkpoint)


def test_non_bloom_config_is_refused(small_checkpoint):
    (small_checkpoint / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 16}))
    with pytest.raises(BloomConfigError, match=r"config.json describes model_type='llama'"):
        load_bloom(small_checkpoint)


def test_directory_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(BloomConfig().to_hf()))
    with pytest.raises(HFCheckpointError, match="neither model.safetensors nor"):
        load_bloom(tmp_path)
    with pytest.raises(HFCheckpointError, match="is not a directory"):
        load_bloom(tmp_path / "nowhere")
