"""The `mmst` command: the README's main job, gin flags at the edge, convert, and user errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from bloom_reference import random_hf_bloom
from mmst_jax import cli


def mmst(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmst_jax", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_default_sample_job_writes_sample_records(tmp_path):
    out = tmp_path / "samples"
    result = mmst("sample", "--output_dir", str(out), "--gin.sample.num_samples=2",
                  "--gin.sample.max_new_tokens=8")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / "part-00000-of-00001.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8  # 4 built-in prompts x 2 samples
    fields = {"problem_id", "dataset", "method", "sample_index", "round", "prompt", "completion",
              "gold", "seed"}
    assert all(set(r) == fields for r in records)
    assert {r["method"] for r in records} == {"text", "code"}
    assert sorted({r["sample_index"] for r in records}) == [0, 1]
    assert not list(out.glob("*.tmp*"))


def test_sample_reads_a_prompts_file_and_an_hf_checkpoint(tmp_path, bpe_tokenizer_dir):
    hf = random_hf_bloom(4, vocab_size=1024, seed=5)
    hf.save_pretrained(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Q: 2 + 3?", "gold": "5", "method": "text"}) + "\n")
    result = mmst("sample", "--prompts", str(prompts), "--output_dir", str(tmp_path / "out"),
                  f"--gin.sample.hf_checkpoint='{tmp_path / 'model'}'",
                  f"--gin.sample.tokenizer='{bpe_tokenizer_dir}'", "--gin.sample.temperature=0.0",
                  "--gin.sample.max_new_tokens=4")
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = [json.loads(l) for l in (tmp_path / "out" / "part-00000-of-00001.jsonl").open()]
    assert record["prompt"] == "Q: 2 + 3?" and record["gold"] == "5"


def test_user_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    result = mmst("sample", "--prompts", str(bad), "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1
    assert f"{bad}:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("part-*"))

    result = mmst("sample", "--gin.sample.temperature=-1", "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and "temperature must be >= 0" in result.stderr


def test_gin_flags_are_split_and_checked(tmp_path):
    files, bindings, rest = cli.split_gin_flags(
        ["--gin_file=a.gin", "--gin.x.y=3", "--input", "f", "--gin_file", "b.gin", "--gin.z", "'s'"])
    assert files == ["a.gin", "b.gin"]
    assert bindings == ["x.y = 3", "z = 's'"]
    assert rest == ["--input", "f"]
    with pytest.raises(cli.UsageError, match="not found"):
        cli.resolve_gin_file("missing.gin")
    assert cli.main(["nonsense"]) == 2
    assert cli.main(["sample", "--gin.no_such.thing=1"]) == 2
    assert cli.main(["sample", "--gin_file=missing.gin"]) == 2


def test_convert_hf_to_orbax_and_back_is_identical(tmp_path):
    import transformers

    hf = random_hf_bloom(6, n_layer=2, seed=8)
    hf.save_pretrained(tmp_path / "hf")
    assert cli.main(["convert", "--to", "orbax", "--input", str(tmp_path / "hf"),
                     "--output", str(tmp_path / "orbax")]) == 0
    assert os.path.isdir(tmp_path / "orbax" / "params")
    assert cli.main(["convert", "--to", "hf", "--input", str(tmp_path / "orbax"),
                     "--output", str(tmp_path / "back")]) == 0
    back = transformers.BloomForCausalLM.from_pretrained(tmp_path / "back")
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_sharded_convert_on_a_simulated_slice(tmp_path):
    """HF -> orbax with the weights placed on the cpu-8 topology's 2x2x2 mesh, then read back."""
    hf = random_hf_bloom(4, n_layer=2, seed=9)
    hf.save_pretrained(tmp_path / "hf")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "mmst_jax", "convert", "--to", "orbax", "--sharded",
                             "--gin_file=topologies/cpu-8.gin", "--input", str(tmp_path / "hf"),
                             "--output", str(tmp_path / "orbax")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert cli.main(["convert", "--to", "hf", "--input", str(tmp_path / "orbax"),
                     "--output", str(tmp_path / "back")]) == 0
    import transformers

    back = transformers.BloomForCausalLM.from_pretrained(tmp_path / "back")
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
