"""`mmst train` at the edge: gin files and bindings, the built-in default job, the exported model, errors."""

import json

import gin
import numpy as np
import pytest

from mmst_jax import cli
from mmst_jax.cli import train as train_command
from mmst_jax.training.data import read_examples

SMALL = ["train.model_preset='tiny'", "TrainConfig.num_steps=4", "TrainConfig.warmup_steps=1",
         "TrainConfig.batch_size=4", "TrainConfig.checkpoint_every=2",
         "train.task_feature_lengths={'inputs': 24, 'targets': 8}"]


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_train_gin_runs_the_builtin_job_exports_the_model_and_resumes(clean_gin, tmp_path, capsys):
    from mmst_jax.models.orbax import load_orbax

    cli.parse_gin(["train.gin"], SMALL + [f"MODEL_DIR='{tmp_path}'"])
    assert train_command.main([]) == 0
    out = capsys.readouterr().out
    assert "trained to step 4" in out and f"model written to {tmp_path / 'model'}" in out
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
    config, params = load_orbax(str(tmp_path / "model"))
    assert config.hidden_size == 64 and config.param_dtype == "float32"
    assert all(np.isfinite(np.asarray(x)).all() for x in jax_leaves(params))

    assert train_command.main([]) == 0  # everything is done: resumes at step 4 and stops
    assert "trained to step 4" in capsys.readouterr().out


def test_a_jsonl_data_file_is_read_and_checked(clean_gin, tmp_path):
    good = tmp_path / "train.jsonl"
    good.write_text("".join(json.dumps({"inputs": f"Q: {i} + 1?\nA:", "targets": f" {i + 1}"}) + "\n"
                            for i in range(20)))
    assert len(read_examples(str(good))) == 20
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"inputs": "x", "targets": "y"}) + "\n" + json.dumps({"inputs": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: each line must be an object with string 'inputs' and 'targets'"):
        read_examples(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no examples"):
        read_examples(str(empty))
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        read_examples(str(tmp_path / "missing.jsonl"))


def test_the_largest_models_gin_file_parses_to_bf16_params(clean_gin):
    cli.parse_gin(["train_bf16_params.gin"], [])
    assert gin.query_parameter("train.param_dtype") == "bfloat16"
    assert gin.query_parameter("train.dtype") == "bfloat16"
    assert gin.query_parameter("TrainConfig.micro_batches") == 8


def jax_leaves(tree):
    import jax
    return jax.tree.leaves(tree)
