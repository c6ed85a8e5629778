"""Meshes and logical axis rules: every mesh shape computes what one device computes, two real
processes (the multi-host path of a TPU pod slice) agree with one, and bad input is refused."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mmst_jax import sharding
from mmst_jax.sharding import MeshConfig, PartitioningError

WORKER = os.path.join(os.path.dirname(__file__), "sharded_worker.py")
MESHES = ["8,1,1", "2,2,2", "1,4,2", "1,1,8"]


def run_worker(*args, devices: int, timeout=240, **popen):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, WORKER, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"worker did not finish in {timeout}s: {err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out


def assert_same(reference, result):
    assert result["loss"] == pytest.approx(reference["loss"], abs=1e-5)
    np.testing.assert_allclose(result["logits"], reference["logits"], atol=1e-5)
    for ref_grad, grad in zip(reference["grads"], result["grads"]):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result["new_params"], reference["new_params"], rtol=1e-5)


def test_every_mesh_shape_matches_one_device():
    args = [a for m in ["1,1,1"] + MESHES for a in ("--mesh", m)]
    results = json.loads(finish(run_worker(*args, devices=8)).strip().splitlines()[-1])
    reference, sharded = results[0], results[1:]
    assert reference["devices"] == 8
    for result in sharded:
        assert_same(reference, result)
    # The parameters really are split: [layers, embed/fsdp, heads/tensor, 3, head_dim].
    shards = {tuple(r["mesh"]): r["qkv_shard_shape"] for r in sharded}
    assert shards[(2, 2, 2)] == [2, 32, 4, 3, 8]
    assert shards[(1, 1, 8)] == [2, 64, 1, 3, 8]
    assert shards[(1, 4, 2)] == [2, 16, 4, 3, 8]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
    """jax.distributed on localhost with CPU collectives: 2 processes x 2 devices, mesh 2x1x2."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [run_worker("--mesh", "2,1,2", "--coordinator", coordinator, "--num_processes", "2",
                        "--process_id", str(i), "--output", str(tmp_path / f"p{i}.json"), devices=2)
             for i in range(2)]
    reference_proc = run_worker("--mesh", "1,1,1", devices=1)
    try:
        for proc in procs:
            finish(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    reference = json.loads(finish(reference_proc).strip().splitlines()[-1])[0]
    for i in range(2):
        (result,) = json.loads((tmp_path / f"p{i}.json").read_text())
        assert (result["processes"], result["devices"]) == (2, 4)
        assert_same(reference, result)


def test_mesh_that_does_not_divide_the_devices_is_refused():
    with pytest.raises(PartitioningError, match="needs 12 devices but 8 are present"):
        MeshConfig(shape={"data": 2, "fsdp": 3, "tensor": 2}).resolve(8)
    with pytest.raises(PartitioningError, match="use 3 devices, which does not divide the 8"):
        MeshConfig(shape={"data": -1, "fsdp": 3, "tensor": 1}).resolve(8)
    assert MeshConfig(shape={"data": -1, "fsdp": 2, "tensor": 2}).resolve(8) == (2, 2, 2)
    with pytest.raises(PartitioningError, match="unknown axes"):
        MeshConfig(shape={"model": 8})
    with pytest.raises(PartitioningError, match="has 4 devices but 1 are available"):
        sharding.make_mesh((2, 2, 1))


def test_rules_naming_unknown_axes_are_refused():
    with pytest.raises(PartitioningError, match=r"names mesh axis 'model'; the mesh axes are data"):
        MeshConfig(rules=[("heads", "model")])
    with pytest.raises(PartitioningError, match=r"names logical axis 'hidden'"):
        MeshConfig(rules=[("hidden", "fsdp")])
    with pytest.raises(PartitioningError, match="must be a pair"):
        sharding.validate_rules([("heads",)])


def test_dimension_not_divisible_by_its_mesh_axis_is_named():
    from jax.sharding import AbstractMesh

    mesh = AbstractMesh((1, 2, 4), sharding.MESH_AXES)  # a 2x4 slice, no devices needed
    specs = {"qkv": PartitionSpec("embed", "heads", None, "kv")}
    good = {"qkv": jax.ShapeDtypeStruct((64, 8, 3, 8), np.float32)}
    sharding.logical_to_sharding(specs, mesh, shapes=good)
    bad = {"qkv": jax.ShapeDtypeStruct((64, 6, 3, 8), np.float32)}
    with pytest.raises(PartitioningError, match=r"qkv.*dimension 1 \(heads\) has size 6, not divisible "
                                                r"by mesh axes tensor = 4; change the mesh shape or the "
                                                r"rule for 'heads'"):
        sharding.logical_to_sharding(specs, mesh, shapes=bad)


def test_topology_files_parse_and_fit_their_slices():
    import gin

    from mmst_jax import cli
    from mmst_jax.cli.configurables import MeshConfig as ConfiguredMeshConfig

    expected = {"cpu-1": 1, "cpu-8": 8, "v4-8": 4, "v4-32": 16, "v4-128": 64, "v4-512": 256,
                "v5e-256": 256, "v5p-128": 64}
    for name, devices in expected.items():
        gin.clear_config()
        cli.parse_gin([f"topologies/{name}.gin"], [])
        config = ConfiguredMeshConfig()
        assert (config.name, config.num_devices) == (name, devices)
        assert np.prod(config.resolve(devices)) == devices
    gin.clear_config()
