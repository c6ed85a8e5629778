"""An HF checkpoint read straight from gs:// (the GCS emulator of conftest.py): on a mesh of two
processes each host reads half of every tensor's bytes (measured by the reader and, independently,
by its own endpoint's count of the bytes the emulator served), and the parameters and logits are
exactly those of the same checkpoint loaded from a local directory."""

import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np

from gcs_emulator import free_port
from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.hf import save_bloom
from test_hf_checkpoint import random_params

HERE = pathlib.Path(__file__).resolve().parent


def header_bytes(path: pathlib.Path) -> int:
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def test_hf_checkpoint_from_gcs_on_two_hosts_reads_half_each_and_matches_local(gcs, tmp_path):
    config = BloomConfig(vocab_size=256, hidden_size=64, n_layer=4, n_head=4)
    local = tmp_path / "ckpt"
    save_bloom(config, random_params(config, seed=5), local, max_shard_bytes=100_000)
    shards = sorted(local.glob("*.safetensors"))
    assert len(shards) >= 8
    url = f"gs://{gcs.bucket}/hf/ckpt"
    save_bloom(config, random_params(config, seed=5), url, max_shard_bytes=100_000)  # uploaded file by file
    headers = sum(header_bytes(p) for p in shards)
    tensors = sum(p.stat().st_size for p in shards) - headers

    gates = [gcs.new_gate() for _ in range(2)]  # one endpoint per host: each counts what it served
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for i, gate in enumerate(gates):
        env = {**os.environ, **gate.environment(), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "gcs_hf_worker.py"), "--gcs", url, "--local", str(local),
             "--coordinator", coordinator, "--process_id", str(i), "--output", str(tmp_path / f"host{i}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    hosts = [json.loads((tmp_path / f"host{i}.json").read_text()) for i in range(2)]
    for host, gate in zip(hosts, gates):
        assert host["same_params"] and host["same_logits"]
        # Every tensor's rows divide over the 4 devices: each host reads exactly half of every
        # tensor, plus every shard's header (today's reader: all of every tensor on each host).
        assert host["bytes"] == tensors // 2 + headers, (host["bytes"], tensors, headers)
        small_files = sum((local / f).stat().st_size for f in ("config.json", "model.safetensors.index.json"))
        assert host["bytes"] <= gate.bytes_served <= host["bytes"] + small_files, (gate.bytes_served, host)
    print(json.dumps({"shards": len(shards), "tensor_bytes": tensors, "header_bytes": headers,
                      "read_by_host": [h["bytes"] for h in hosts], "requests_by_host": [h["requests"] for h in hosts],
                      "served_to_host": [g.bytes_served for g in gates]}))
    assert hosts[0]["logits"] == hosts[1]["logits"]
    assert np.isfinite(np.asarray(hosts[0]["logits"])).all()
