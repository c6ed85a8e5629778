"""Every reader and writer of the project on gs:// paths, against the GCS emulator (conftest.py):
records, stage markers, tokenizers, HF and orbax model directories, training checkpoints and
TensorBoard events behave as they do locally; a missing object, a missing bucket and a refused
permission are each one error naming the path."""

import json

import numpy as np
import pytest
from etils import epath

from mmst_jax import storage
from mmst_jax.models.bloom import BloomConfig, BloomConfigError
from mmst_jax.models.hf import HFCheckpointError, load_bloom, save_bloom
from test_hf_checkpoint import flatten, random_params


@pytest.fixture(scope="module")
def base(gcs):
    return f"gs://{gcs.bucket}/loaders"


@pytest.fixture(scope="module")
def hf_checkpoint(base, tmp_path_factory):
    config = BloomConfig(vocab_size=320, hidden_size=16, n_layer=2, n_head=2)
    local = tmp_path_factory.mktemp("hf") / "ckpt"
    save_bloom(config, random_params(config, seed=2), local, max_shard_bytes=4000)
    save_bloom(config, random_params(config, seed=2), f"{base}/hf")
    storage.copy_tree(local, f"{base}/hf_sharded")
    return local, f"{base}/hf", f"{base}/hf_sharded"


def test_records_and_stage_markers_on_gcs(base):
    from mmst_jax.mmst import rundir
    from mmst_jax.records import read_jsonl, read_parts, remove, write_jsonl

    d = epath.Path(f"{base}/stage")
    records = [{"problem_id": str(i), "x": "é" * i} for i in range(5)]
    assert write_jsonl(d / "text" / "part-00000-of-00001.jsonl", records) == 5
    storage.write_bytes(d / ".hidden.partial", b"{}\n")
    storage.write_bytes(d / ".work" / "checkpoints" / "x", b"state")
    assert read_jsonl(d / "text" / "part-00000-of-00001.jsonl") == records
    assert read_parts(d / "text") == records
    marker = rundir.mark_done(d, "inputs", {"n": 5})
    assert list(marker["files"]) == ["text/part-00000-of-00001.jsonl"]  # hidden files and dirs left out
    assert rundir.stage_state(d, "inputs").done
    remove(d / ".work")
    assert rundir.stage_state(d, "inputs").done
    storage.write_bytes(d / "text" / "part-00000-of-00001.jsonl", b'{"problem_id": "0"}\n')
    assert rundir.stage_state(d, "inputs").reason.startswith("corrupt: text/part-00000-of-00001.jsonl has")
    remove(d)
    assert not d.exists()
    with pytest.raises(FileNotFoundError, match=f"{base}/stage/nothing.jsonl: no such file"):
        read_jsonl(d / "nothing.jsonl")


def test_hf_checkpoint_config_and_tokenizer_from_gcs(hf_checkpoint, base, bpe_tokenizer_dir):
    from mmst_jax.models.orbax import read_config
    from mmst_jax.vocab import HFTokenizerVocabulary, train_bpe_tokenizer

    local, single, sharded = hf_checkpoint
    config, want = load_bloom(local)
    for url in (single, sharded):
        got_config, got = load_bloom(url)
        assert got_config == config
        got = dict(flatten(got))
        for path, a in flatten(want):
            np.testing.assert_array_equal(a, got[path], err_msg=str(path))
    assert BloomConfig.from_hf(sharded) == BloomConfig.from_hf(local)
    assert read_config(sharded) == read_config(local)
    storage.copy_tree(bpe_tokenizer_dir, f"{base}/tok")
    assert HFTokenizerVocabulary(f"{base}/tok") == HFTokenizerVocabulary(bpe_tokenizer_dir)
    train_bpe_tokenizer(["a b c", "b c d"] * 20, vocab_size=300, path=f"{base}/trained/tokenizer.json")
    assert HFTokenizerVocabulary(f"{base}/trained/tokenizer.json").encode("b c") != []


def test_orbax_model_and_training_checkpoints_on_gcs(hf_checkpoint, base):
    import jax

    from mmst_jax.models.orbax import is_orbax, load_model, load_model_dir, save_orbax
    from mmst_jax.training.checkpoints import Checkpoints

    local, _, sharded = hf_checkpoint
    config, params = load_bloom(local)
    save_orbax(config, params, f"{base}/orbax")
    assert is_orbax(f"{base}/orbax") and not is_orbax(sharded)
    got_config, got = load_model_dir(f"{base}/orbax")
    assert got_config == config
    got = dict(flatten(got))
    for path, a in flatten(params):
        np.testing.assert_array_equal(a, np.asarray(got[path]), err_msg=str(path))
    model = load_model(sharded, f"{base}/trained/tokenizer.json")  # written by the test before
    assert model.config.vocab_size == 320 and model.path == sharded

    state = {"w": jax.numpy.arange(8.0)}
    abstract = {"w": jax.ShapeDtypeStruct((8,), np.float32)}
    meta = {"model": {"vocab_size": 320, "hidden_size": 16, "n_layer": 2, "n_head": 2, "layer_norm_epsilon":
                      config.layer_norm_epsilon, "apply_residual_connection_post_layernorm":
                      config.apply_residual_connection_post_layernorm}}
    with Checkpoints(f"{base}/training/checkpoints", save_every=4, keep=2) as checkpoints:
        for step in (4, 8, 12):
            checkpoints.save(step, {"w": state["w"] * step}, meta)
        assert checkpoints.steps() == [8, 12]
    # An interrupted save on gs://: a step directory without orbax's commit file.
    storage.write_bytes(f"{base}/training/checkpoints/16/state/x", b"half")
    with Checkpoints(f"{base}/training/checkpoints", save_every=4, keep=2) as checkpoints:
        assert checkpoints.unfinished() == ["16"]
        assert checkpoints.steps() == [8, 12]
        step, restored, _ = checkpoints.restore(abstract, config)
    assert step == 12 and np.array_equal(np.asarray(restored["w"]), np.arange(8.0) * 12)


def test_tensorboard_events_on_gcs_are_whole_objects(base):
    writer = storage.summary_writer(f"{base}/tb")
    writer.add_scalar("loss", 1.0, 1)
    writer.flush()
    (name,) = storage.files_under(f"{base}/tb")
    first = (epath.Path(f"{base}/tb") / name).read_bytes()
    writer.add_scalar("loss", 0.5, 2)
    writer.close()
    second = (epath.Path(f"{base}/tb") / name).read_bytes()
    assert name.startswith("events.out.tfevents") and len(second) > len(first) and second.startswith(first)


def test_missing_objects_buckets_and_refused_permission_are_named(gcs, hf_checkpoint, base):
    from mmst_jax.mmst import rundir
    from mmst_jax.vocab import HFTokenizerVocabulary, VocabularyError

    with pytest.raises(HFCheckpointError, match=f"^{base}/nothing is not a directory"):
        load_bloom(f"{base}/nothing")
    with pytest.raises(VocabularyError, match=f"^tokenizer file {base}/nothing/tokenizer.json does not exist"):
        HFTokenizerVocabulary(f"{base}/nothing/tokenizer.json")
    _, _, sharded = hf_checkpoint
    storage.copy_tree(sharded, f"{base}/no_config")
    epath.Path(f"{base}/no_config/config.json").unlink()
    with pytest.raises(BloomConfigError, match=f"^{base}/no_config/config.json does not exist"):
        load_bloom(f"{base}/no_config")
    with pytest.raises(storage.StorageError, match="^gs://no-such-bucket-mmst/x: the bucket gs://no-such-bucket-mmst "
                                                   "does not exist"):
        rundir.RunDir("gs://no-such-bucket-mmst/x").check_config("x = 1\n")
    with pytest.raises(storage.StorageError, match="the bucket gs://no-such-bucket-mmst does not exist"):
        storage.read_range("gs://no-such-bucket-mmst/model.safetensors", 0, 8)

    gcs.emulator.create_bucket("mmst-refused")
    storage.write_bytes("gs://mmst-refused/run/config.gin", b"x = 1\n")
    gcs.gate.refuse("mmst-refused")
    try:
        with pytest.raises(storage.StorageError, match="^gs://mmst-refused/run: permission denied"):
            rundir.RunDir("gs://mmst-refused/run").check_config("x = 1\n")
        with pytest.raises(storage.StorageError, match="^gs://mmst-refused/ckpt: permission denied"):
            load_bloom("gs://mmst-refused/ckpt")
        with pytest.raises(storage.StorageError, match="^gs://mmst-refused/run/a.json: permission denied"):
            storage.write_bytes("gs://mmst-refused/run/a.json", json.dumps({}).encode())
    finally:
        gcs.gate.allow_all()
    assert not epath.Path("gs://mmst-refused/run/a.json").exists()  # nothing half-written
