"""`mmst plan`: compiled per-device memory next to the analytic estimate, on simulated devices."""

import json
import os
import subprocess
import sys

import pytest

from mmst_jax import memory_plan
from mmst_jax.models.bloom import BloomConfig


def mmst_plan(*args, tmp_path):
    out = tmp_path / "plan.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-m", "mmst_jax", "plan", "--output", str(out), *args],
                            capture_output=True, text=True, timeout=300, env=env)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_compiled_arguments_match_the_analytic_state_on_8_devices(tmp_path):
    result, rows = mmst_plan(
        "--gin_file=topologies/cpu-8.gin", "--gin.plan.model_preset='bloom-560m'",
        "--gin.plan.train_batch=8", "--gin.plan.train_length=128", "--gin.plan.decode_batch=8",
        "--gin.plan.cache_length=256", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| cpu-8 | 8 | 2×2×2 | train | cpu |" in result.stdout
    train, decode = rows
    assert (train["step"], decode["step"]) == ("train", "decode")
    gib = 2**30
    # What the step takes as arguments is exactly the sharded state the analytic model counts:
    # parameters + AdamW moments (train), parameters + KV cache (decode); inputs are tiny.
    state = train["analytic"]["parameters"] + train["analytic"]["optimizer"]
    assert train["compiled"]["arguments"] == pytest.approx(state, rel=0.05)
    cache = decode["analytic"]["parameters"] + decode["analytic"]["kv_cache"]
    assert decode["compiled"]["arguments"] == pytest.approx(cache, rel=0.05)
    # The donated state comes back in place.
    assert train["compiled"]["aliased"] == pytest.approx(train["compiled"]["outputs"], rel=0.01)
    for row in rows:
        assert row["compiled_peak"] > row["compiled"]["arguments"] > 0.01 * gib
        assert row["fits"] is None  # a CPU topology has no HBM figure


def test_analytic_plan_and_verdicts_without_compiling(tmp_path):
    result, rows = mmst_plan("--gin_file=topologies/v4-512.gin", "--no_compile", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    train, decode = rows
    assert train["model"] == "bloom-176b" and train["mesh"] == [1, 64, 4] and train["hbm_gib"] == 32
    assert train["compiled"] is None and isinstance(train["fits"], bool)
    # bf16 parameters sharded 256 ways: 176B x 2 bytes / 256.
    assert train["analytic"]["parameters"] == pytest.approx(176.25e9 * 2 / 256, rel=0.01)


def test_fit_verdict_and_table():
    assert memory_plan.fits(10 * 2**30, 16) is True
    assert memory_plan.fits(15 * 2**30, 16) is False  # above 90% of HBM
    assert memory_plan.fits(1.0, None) is None
    refusal = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
                           "HLO temporaries (58.53G) exceeds available HBM (30.75G).")
    assert memory_plan.out_of_memory(refusal)["temporaries"] == pytest.approx(58.53 * 2**30)
    assert memory_plan.out_of_memory(RuntimeError("something else")) is None
    config = BloomConfig.preset("bloom-7b1", param_dtype="bfloat16", dtype="bfloat16", remat_policy="full")
    w = memory_plan.Workload(8, 1024, 8, 1024, "bfloat16")
    one = memory_plan.analytic_train(config, (1, 1, 1), w)
    four = memory_plan.analytic_train(config, (1, 4, 1), w)
    assert four["parameters"] == pytest.approx(one["parameters"] / 4)
    assert four["activations"] < one["activations"]


def test_topology_without_a_device_count_is_refused(tmp_path):
    result, _ = mmst_plan("--gin.partitioning.MeshConfig.name='mine'", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "does not say how many devices" in result.stderr
