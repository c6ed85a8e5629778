"""Checkpoints: exact resume (stopped or killed), another mesh, another model, damaged directories.

This file is also the worker the tests start in subprocesses: `python test_checkpoints.py MODE DIR`.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

TINY_FIELDS = dict(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)
STEPS, EVERY = 20, 5


def setup():
    """The run every test repeats: a shuffled, repeated, packed toy dataset and 20 AdamW steps."""
    from test_training import LENGTHS, toy_dataset, toy_examples

    from mmst_jax import training
    from mmst_jax.models.bloom import BloomConfig

    config = BloomConfig(**TINY_FIELDS)
    data = training.seqio_dataset(toy_dataset(toy_examples(30, seed=7)), LENGTHS, 4, pack=True, seed=11)
    tc = training.TrainConfig(num_steps=STEPS, batch_size=4, learning_rate=3e-3, warmup_steps=3,
                              weight_decay=0.1, z_loss=1e-4, checkpoint_every=EVERY, log_every=5,
                              progress_bar=False)
    return config, data, tc


def mesh_of(shape):
    import jax

    from mmst_jax.sharding import make_mesh
    return make_mesh(shape, jax.devices()[:int(np.prod(shape))])


def host(state):
    import jax
    return jax.tree.map(np.asarray, jax.device_get(state.to_dict()))


def assert_bit_identical(a, b):
    import jax
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def run_worker(mode, workdir, devices=1):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.abspath(__file__), mode, str(workdir)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """20 steps in one go (checkpoints at 5, 10, 15, 20): the reference every resumed run must equal."""
    from mmst_jax import training

    workdir = tmp_path_factory.mktemp("straight")
    config, data, tc = setup()
    state = training.train(config, None, data, tc, mesh_of((1, 1, 1)), str(workdir))
    return workdir, host(state)


def test_stop_at_10_then_resume_to_20_is_bit_identical(straight, tmp_path):
    from mmst_jax.training import checkpoints
    from mmst_jax import training

    config, data, tc = setup()
    stopped = training.train(config, None, data, tc, mesh_of((1, 1, 1)), str(tmp_path), stop_at_step=10)
    assert int(stopped.step) == 10
    assert checkpoints.Checkpoints(tmp_path / "checkpoints").steps() == [5, 10]
    config, data, tc = setup()  # a new process would rebuild everything: so do we
    resumed = training.train(config, None, data, tc, mesh_of((1, 1, 1)), str(tmp_path))
    assert int(resumed.step) == STEPS
    assert_bit_identical(host(resumed), straight[1])
    assert checkpoints.Checkpoints(tmp_path / "checkpoints").steps() == [10, 15, 20]  # keep the last 3


def test_killed_mid_run_then_resumed_is_bit_identical(straight, tmp_path):
    from mmst_jax.training import checkpoints
    from mmst_jax import training

    result = run_worker("kill_at_13", tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    steps = checkpoints.Checkpoints(tmp_path / "checkpoints").steps()
    assert steps and set(steps) <= {5, 10}  # never a partial one, even with a save in flight
    config, data, tc = setup()
    resumed = training.train(config, None, data, tc, mesh_of((1, 1, 1)), str(tmp_path))
    assert_bit_identical(host(resumed), straight[1])


def test_checkpoint_written_on_1_device_restores_onto_4(straight, tmp_path):
    np.savez(tmp_path / "expected.npz", **flat(straight[1]))
    shutil.copytree(straight[0], tmp_path / "run")
    result = run_worker("restore_on_4", tmp_path, devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"step": 20, "devices": 4, "equal": True, "qkv_kernel_shards": 4, "next_loss_finite": True}


def test_a_checkpoint_of_another_model_is_refused(straight):
    import dataclasses

    from mmst_jax.training import checkpoints
    from mmst_jax import training

    config, data, tc = setup()
    other = dataclasses.replace(config, hidden_size=64)
    with pytest.raises(checkpoints.CheckpointError, match=r"another model \(hidden_size 32 there, 64 here\)"):
        training.train(other, None, data, tc, mesh_of((1, 1, 1)), str(straight[0]))


def test_a_damaged_checkpoint_falls_back_to_the_last_complete_one(straight, tmp_path, caplog):
    from mmst_jax.training import checkpoints
    from mmst_jax import training

    shutil.copytree(straight[0], tmp_path / "run")
    directory = tmp_path / "run" / "checkpoints"
    for name in os.listdir(directory / "20" / "state"):  # step 20's arrays are gone
        if name not in ("_CHECKPOINT_METADATA", "commit_success.txt"):
            shutil.rmtree(directory / "20" / "state" / name, ignore_errors=True)
            if (directory / "20" / "state" / name).exists():
                os.remove(directory / "20" / "state" / name)
    shutil.copytree(directory / "15", directory / "25.orbax-checkpoint-tmp-1234")  # an interrupted save
    config, _, tc = setup()
    program = training.training_program(config, tc, mesh_of((1, 1, 1)))
    abstract = training.abstract_state(config, program.optimizer, program.shardings).to_dict()
    manager = checkpoints.Checkpoints(directory)
    assert manager.steps() == [10, 15, 20]  # the interrupted save is not listed
    with caplog.at_level(logging.WARNING, logger="mmst_jax.training.checkpoints"):
        step, state, meta = manager.restore(abstract, config)
    assert step == 15 and int(state["step"]) == 15 and meta["data"] == {"position": 15}
    assert "25.orbax-checkpoint-tmp-1234: an interrupted save, not a complete checkpoint" in caplog.text
    assert "checkpoint" in caplog.text and "20 is damaged" in caplog.text and "falling back to step 15" in caplog.text

    for step in ("10", "15"):
        (directory / step / "meta" / "metadata").write_text("{ not json")
    with pytest.raises(checkpoints.CheckpointError, match=r"no readable checkpoint .*steps \[10, 15, 20\] are all damaged"):
        manager.restore(abstract, config)


def flat(tree):
    import jax
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def worker(mode: str, workdir: str) -> None:
    import jax

    from mmst_jax.training import checkpoints
    from mmst_jax import training

    config, data, tc = setup()
    if mode == "kill_at_13":
        def kill(step, metrics):
            if step == 13:
                os.kill(os.getpid(), signal.SIGKILL)
        training.train(config, None, data, tc, mesh_of((1, 1, 1)), workdir, on_step=kill)
    elif mode == "restore_on_4":
        mesh = mesh_of((1, 2, 2))  # FSDP over the embedding, tensor parallel over heads and MLP
        program = training.training_program(config, tc, mesh)
        abstract = training.abstract_state(config, program.optimizer, program.shardings).to_dict()
        with checkpoints.Checkpoints(os.path.join(workdir, "run", "checkpoints")) as manager:
            step, restored, meta = manager.restore(abstract, config)
        state = training.TrainState.from_dict(restored)
        expected = np.load(os.path.join(workdir, "expected.npz"))
        got = flat(host(state))
        equal = sorted(got) == sorted(expected.files) and all(np.array_equal(got[k], expected[k]) for k in got)
        qkv = state.params["h"]["self_attention"]["query_key_value"]["kernel"]
        qkv_shards = len({str(s.index) for s in qkv.addressable_shards})
        data = training.BatchIterator(data)
        data.set_state(meta["data"])
        batch = {k: v for k, v in next(data).items() if k in training.FEATURES or k == "decoder_segment_ids"}
        batch = {k: jax.device_put(v, training.batch_sharding(mesh)) for k, v in batch.items()}
        _, metrics = program.step(state, batch)
        print(json.dumps({"step": step, "devices": len(jax.devices()), "equal": bool(equal),
                          "qkv_kernel_shards": qkv_shards,
                          "next_loss_finite": bool(np.isfinite(float(metrics["loss"])))}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    worker(sys.argv[1], sys.argv[2])
