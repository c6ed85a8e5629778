"""A run's programs (mmst_jax.mmst.programs), their checks, and `mmst plan` compiling them."""

import json
import os
import subprocess
import sys

import pytest

from mmst_jax import memory_plan
from mmst_jax.mmst import programs
from mmst_jax.mmst.config import Generation, ModelPolicy, RunConfig
from mmst_jax.mmst.problems import Problems
from mmst_jax.models.bloom import BloomConfig
from mmst_jax.sharding import DEFAULT_RULES
from mmst_jax.training import TrainConfig


def mmst_plan(*args, tmp_path, timeout=600):
    out = tmp_path / "plan.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-m", "mmst_jax", "plan", "--output", str(out), *args],
                            capture_output=True, text=True, timeout=timeout, env=env)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def settings(**overrides):
    base = dict(model=BloomConfig.preset("bloom-176b"), config=RunConfig(),
                finetune=TrainConfig(batch_size=128, micro_batches=2), mesh_shape={"data": 1, "fsdp": 64, "tensor": 4},
                rules=DEFAULT_RULES)
    return programs.Settings(**{**base, **overrides})


def prompts(lengths):
    records = [{"problem_id": str(i), "dataset": "d", "method": m, "gold": "1", "prompt": "x", "prompt_tokens": n}
               for i, n in enumerate(lengths) for m in ("text", "code")]
    return Problems(train={m: [r for r in records if r["method"] == m] for m in ("text", "code")},
                    test={m: [r for r in records if r["method"] == m] for m in ("text", "code")})


def test_the_old_176b_micro_batches_are_refused_naming_the_setting_and_the_fix():
    bad = settings(finetune=TrainConfig(batch_size=128, micro_batches=16))
    with pytest.raises(programs.ProgramError) as e:
        programs.check(programs.describe(bad))
    message = str(e.value)
    assert "finetune/TrainConfig: batch_size 128 in 16 micro-batches gives 8 rows" in message
    assert "64 data-parallel devices" in message and "finetune/TrainConfig.batch_size = 1024" in message
    programs.check(programs.describe(settings()))  # the experiment's fixed setting passes


def test_decode_rows_must_divide_over_the_mesh():
    bad = settings(config=RunConfig(generation=Generation(batch_size=100)))
    with pytest.raises(programs.ProgramError, match=r"mmst.Generation.batch_size = 100 .* set it to 128"):
        programs.check(programs.describe(bad))


def test_a_prompt_longer_than_the_cache_is_refused():
    tight = settings(config=RunConfig(generation=Generation(batch_size=64, max_cache_length=256, max_new_tokens=64),
                                      feature_lengths={"inputs": 512, "targets": 64}))
    programs.check(programs.describe(tight, prompts([100, 192])))  # 192 + 64 = 256 fits
    with pytest.raises(programs.ProgramError, match=r"sample: the longest prompt has 193 tokens.*"
                                                    r"mmst.Generation.max_cache_length is 256"):
        programs.check(programs.describe(tight, prompts([100, 193])))


def test_a_prompt_longer_than_the_training_budget_is_refused():
    run = settings(config=RunConfig(generation=Generation(batch_size=64), feature_lengths={"inputs": 128, "targets": 64}))
    programs.check(programs.describe(run, prompts([129])))  # 128 tokens after the start token
    with pytest.raises(programs.ProgramError, match=r"has 129 tokens but mmst.RunConfig.feature_lengths\['inputs'\] is 128"):
        programs.check(programs.describe(run, prompts([130])))


def test_a_tokenizer_larger_than_the_vocabulary_is_refused():
    small = settings(model=BloomConfig.preset("tiny", vocab_size=512), mesh_shape={"data": 1, "fsdp": 4, "tensor": 2},
                     finetune=TrainConfig(batch_size=8), config=RunConfig(generation=Generation(batch_size=8)),
                     tokenizer_size=1024, tokenizer="tokenizer t.json")
    with pytest.raises(programs.ProgramError, match=r"t.json has 1024 tokens but the model's vocabulary has 512"):
        programs.check(programs.describe(small))


def test_a_mesh_that_does_not_divide_the_model_is_refused():
    odd = settings(model=BloomConfig.preset("tiny", n_head=6, hidden_size=96), mesh_shape={"fsdp": 1, "tensor": 4},
                   finetune=TrainConfig(batch_size=8), config=RunConfig(generation=Generation(batch_size=8)))
    with pytest.raises(programs.ProgramError, match=r"n_head \(6\) is split over 4 devices"):
        programs.check(programs.describe(odd))


def test_programs_carry_the_policy_the_real_prompt_lengths_and_a_round_size():
    run = settings(config=RunConfig(policy=ModelPolicy(dtype="bfloat16", param_dtype="bfloat16", remat_policy="full"),
                                    generation=Generation(batch_size=64, max_new_tokens=100, length_bucket=32,
                                                          vote_samples=8, num_samples=4)))
    described = programs.describe(run, prompts([50, 70]))
    finetune = described.train[0]
    assert (finetune.model.dtype, finetune.model.remat_policy, finetune.length) == ("bfloat16", "full", 256)
    by_name = {p.name: p for p in described.decode}
    assert set(by_name) == {"sample", "translate", "eval_greedy", "eval_vote"}
    sample = by_name["sample"]
    assert sample.model.cache_dtype.dtype.name == "bfloat16"  # a bf16 model decodes with a bf16 cache
    assert (sample.longest_prompt, sample.cache_length, sample.slots) == (70, 96 + 100, 64)
    assert sample.rows == 2 * 2 * 4 and by_name["eval_vote"].rows == 2 * 2 * 8
    flops = programs.round_flops(described)
    n = finetune.model.num_params()
    assert flops["sample"] == pytest.approx(2 * n * (2 * (50 + 70) + 16 * 100))
    assert flops["finetune"] == pytest.approx(6 * n * 1000 * 128 * 256)


def test_analytic_memory_of_a_program():
    config = BloomConfig.preset("bloom-7b1", param_dtype="bfloat16", dtype="bfloat16", remat_policy="full")
    train = programs.TrainProgram("finetune", "finetune/TrainConfig", config, TrainConfig(batch_size=8), 1024)
    one = memory_plan.analytic_train(train, (1, 1, 1))
    four = memory_plan.analytic_train(train, (1, 4, 1))
    assert four["parameters"] == pytest.approx(one["parameters"] / 4)
    assert four["activations"] < one["activations"]
    accumulated = memory_plan.analytic_train(
        programs.TrainProgram("finetune", "s", config, TrainConfig(batch_size=8, micro_batches=4), 1024), (1, 1, 1))
    assert accumulated["activations"] < one["activations"] and accumulated["gradients"] > one["gradients"]


def test_fit_verdict():
    assert memory_plan.fits(10 * 2**30, 16) is True
    assert memory_plan.fits(15 * 2**30, 16) is False  # above 90% of HBM
    assert memory_plan.fits(1.0, None) is None
    refusal = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
                           "HLO temporaries (58.53G) exceeds available HBM (30.75G).")
    assert memory_plan.out_of_memory(refusal)["temporaries"] == pytest.approx(58.53 * 2**30)
    assert memory_plan.out_of_memory(RuntimeError("something else")) is None


@pytest.mark.parametrize("experiment", ["bloom-176b_v4-512", "bloom-176b_v5p-128", "bloom-7b1_v4-32"])
def test_every_experiment_config_passes_its_checks(experiment, tmp_path):
    result, report = mmst_plan(f"--gin_file=experiments/{experiment}.gin", "--no_compile", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    names = [r["step"] for r in report["rows"]]
    assert names == ["finetune", "sample", "translate", "eval_greedy", "eval_vote"]
    finetune = report["rows"][0]
    assert (finetune["dtype"], finetune["remat"]) == ("bfloat16", "full")
    assert all(r["fits"] for r in report["rows"])


def test_plan_refuses_what_the_run_would_refuse(tmp_path):
    result, _ = mmst_plan("--gin_file=experiments/bloom-176b_v4-512.gin", "--gin.TrainConfig.micro_batches=16",
                          "--no_compile", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "finetune/TrainConfig.batch_size = 1024" in result.stderr


def test_plan_compiles_the_runs_programs_on_8_devices(tmp_path, tiny_hf_checkpoint, data_dir):
    """The 7B1 experiment rehearsed on a tiny checkpoint: the plan measures the real prompts with its
    tokenizer and compiles each program; what a program takes as arguments is the sharded state
    the analytic model counts."""
    result, report = mmst_plan(
        "--gin_file=experiments/bloom-7b1_v4-32.gin", "--gin_file=rehearsal.gin",
        f"--gin.HF_CHECKPOINT='{tiny_hf_checkpoint}'", f"--gin.DATA_DIR='{data_dir}'",
        "--gin.mmst.plan.target='cpu'", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["prompts"] == "measured" and report["model"].endswith("config.json")
    rows = {r["step"]: r for r in report["rows"]}
    assert set(rows) == {"finetune", "sample", "translate", "eval_greedy", "eval_vote"}
    train = rows["finetune"]
    assert train["mesh"] == [1, 4, 2] and train["shape"]["micro_batches"] == 4
    devices_per_row = 4  # data x fsdp
    # Arguments: the sharded state, and this device's rows of the batch (3 int32 features).
    state = train["analytic"]["parameters"] + train["analytic"]["optimizer"]
    batch = 3 * 64 * train["shape"]["length"] * 4 / devices_per_row
    assert train["compiled"]["arguments"] == pytest.approx(state + batch, rel=0.05)
    sample = rows["sample"]
    assert sample["shape"]["longest_prompt"] <= 385 and sample["shape"]["rows_per_round"] > 0
    # Arguments: parameters, the rows' KV caches, their loop state ([slots] vectors, [slots, new]
    # tokens, key data) and the stop automaton's table [states, vocab] (replicated).
    slots, new = sample["shape"]["slots"], sample["shape"]["max_new_tokens"]
    loop_state = (7 * slots + slots * new + 2 * slots) * 4 / devices_per_row + 3 * 1024 * 4
    cache = sample["analytic"]["parameters"] + sample["analytic"]["kv_cache"]
    assert sample["compiled"]["arguments"] == pytest.approx(cache + loop_state, rel=0.05)
    assert report["round"]["flops"]["sample"] > 0


def test_topology_without_a_device_count_is_refused(tmp_path):
    result, _ = mmst_plan("--gin.partitioning.MeshConfig.name='mine'", "--gin.mmst.Tasks.problems=['synthetic']",
                          tmp_path=tmp_path)
    assert result.returncode == 1
    assert "does not say how many devices" in result.stderr


def test_a_bf16_model_decodes_with_a_bf16_cache_unless_told():
    import jax.numpy as jnp

    from mmst_jax.sampling import decode

    tiny = BloomConfig.preset("tiny")
    for policy, dtype in ((ModelPolicy(dtype="bfloat16"), jnp.bfloat16),
                          (ModelPolicy(dtype="bfloat16", kv_cache_dtype="float32"), jnp.float32),
                          (ModelPolicy(), jnp.float32)):
        state = decode.empty_slots(None, config=policy.apply(tiny), slots=2, cache_length=8, max_new_tokens=4)
        assert {c.dtype for c in state.cache["key"] + state.cache["value"]} == {jnp.dtype(dtype)}


def test_compiled_programs_that_do_not_fit_the_devices_memory_are_refused():
    """What `mmst run` does before its first sample on accelerators that report their memory:
    compile each distinct program for the mesh and compare its peak with the device's memory."""
    import jax

    from mmst_jax.sharding import make_mesh

    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    run = programs.describe(settings(model=BloomConfig.preset("tiny"), mesh_shape={"data": 1},
                                     finetune=TrainConfig(batch_size=4, num_steps=2),
                                     config=RunConfig(generation=Generation(batch_size=4, max_new_tokens=8),
                                                      feature_lengths={"inputs": 32, "targets": 16})),
                            prompts([10, 20]))
    assert memory_plan.memory_problems(run, mesh, DEFAULT_RULES, limit_bytes=2**40) == []
    found = memory_plan.memory_problems(run, mesh, DEFAULT_RULES, limit_bytes=2**10)
    # finetune, and the decode programs that differ in their token rules (greedy, sampled)
    assert [m.split(":")[0] for m in found] == ["finetune", "sample", "translate"]
    assert "mmst.Generation.batch_size" in found[1] and "TrainConfig.batch_size" in found[0]
