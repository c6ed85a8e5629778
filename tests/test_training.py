"""Fine-tuning: the loss, packing, gradient accumulation, the optimizer, the data path and the loop."""

import dataclasses
import glob
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from mmst_jax import training
from mmst_jax.models.bloom import BloomConfig, init_params
from mmst_jax.sharding import make_mesh

TINY = BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)
LENGTHS = {"inputs": 12, "targets": 10}


def toy_examples(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` fixed {inputs, targets} examples of varied lengths over token ids 4..63."""
    rng = np.random.default_rng(seed)
    return [{"inputs": rng.integers(4, 64, rng.integers(3, 12)).astype(np.int32),
             "targets": rng.integers(4, 64, rng.integers(2, 10)).astype(np.int32)} for _ in range(n)]


def toy_dataset(examples) -> tf.data.Dataset:
    spec = {"inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)}
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)


def one_device_mesh():
    return make_mesh((1, 1, 1), jax.devices()[:1])


def all_batches(examples, batch_size, pack):
    ds = training.seqio_dataset(toy_dataset(examples), LENGTHS, batch_size, pack=pack, shuffle=False,
                                repeat=False)
    return list(ds.as_numpy_iterator())


def test_feature_converter_masks_the_prompt_and_shifts_the_targets():
    ex = toy_examples(1)[0]
    (batch,) = all_batches([ex], 1, pack=False)
    n_in, n_t = len(ex["inputs"]), len(ex["targets"])
    target = batch["decoder_target_tokens"][0]
    np.testing.assert_array_equal(target[:n_in + n_t], np.concatenate([ex["inputs"], ex["targets"]]))
    np.testing.assert_array_equal(batch["decoder_input_tokens"][0][1:n_in + n_t], target[:n_in + n_t - 1])
    weights = batch["decoder_loss_weights"][0]
    assert weights[:n_in].sum() == 0 and weights[n_in:n_in + n_t].all() and weights[n_in + n_t:].sum() == 0


def test_a_tiny_model_overfits_a_small_fixed_dataset():
    examples = toy_examples(8, seed=1)
    data = training.seqio_dataset(toy_dataset(examples), LENGTHS, 8, pack=False, shuffle=False)
    tc = training.TrainConfig(num_steps=200, batch_size=8, learning_rate=1e-2, warmup_steps=10,
                              decay="constant", log_every=50, progress_bar=False)
    config = dataclasses.replace(TINY, hidden_size=64)
    seen = []
    state = training.train(config, None, data, tc, one_device_mesh(), None,
                           on_step=lambda step, m: seen.append(float(m["loss"])))
    assert seen[0] > 3.0  # ~log(64) at the start
    assert seen[-1] < 0.05, seen[-10:]
    batch = next(iter(data.as_numpy_iterator()))
    losses = training.example_losses(config, state.params, batch)
    assert len(losses) == 8 and losses.max() < 0.1


def test_packing_on_and_off_give_the_same_per_example_losses():
    examples = toy_examples(7, seed=2)
    params = jax.jit(lambda rng: init_params(TINY, rng))(jax.random.key(3))
    unpacked = np.concatenate([training.example_losses(TINY, params, b) for b in all_batches(examples, 7, False)])
    packed_batches = all_batches(examples, 1, True)
    assert len(packed_batches) < 7  # some rows really hold several examples
    packed = np.concatenate([training.example_losses(TINY, params, b) for b in packed_batches])
    assert unpacked.shape == packed.shape == (7,)
    np.testing.assert_allclose(packed, unpacked, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_over_4_micro_batches_equals_one_4x_batch():
    """Tolerance: fp32 sums in another order. Gradients (read off Adam's first moment, 0.1 g) agree
    to rtol 1e-5; the loss to 1e-6 relative; parameters after the step to 1e-5 absolute, 1% of the
    learning rate (Adam's first update is about lr * g / |g|, which magnifies rounding in tiny g)."""
    batch = all_batches(toy_examples(40, seed=4), 8, pack=True)[0]
    batch = {k: v for k, v in batch.items() if k in training.FEATURES or k == "decoder_segment_ids"}
    results = []
    for micro in (1, 4):
        tc = training.TrainConfig(num_steps=10, batch_size=8, micro_batches=micro, learning_rate=1e-3,
                                  max_grad_norm=0.0, z_loss=1e-3)
        program = training.training_program(TINY, tc, one_device_mesh())
        state = training.init_state(TINY, program.init_params(jax.random.key(5)), program.optimizer,
                                    program.shardings, 0)
        results.append(program.step(state, batch))
    (one, m1), (four, m4) = results
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(m4["z_loss"], m1["z_loss"], rtol=1e-6)
    assert m4["accuracy"] == m1["accuracy"] and m4["target_tokens"] == m1["target_tokens"]
    mu = lambda s: s.opt_state[0].mu  # noqa: E731  (adamw's first moment after one step: 0.1 * grad)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), mu(four), mu(one))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5), four.params, one.params)


def test_schedule_warms_up_then_decays_and_weight_decay_skips_norms_and_biases():
    tc = training.TrainConfig(num_steps=110, learning_rate=1.0, warmup_steps=10, end_learning_rate=0.1)
    cosine = training.learning_rate_schedule(tc)
    assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0) and float(cosine(60)) == pytest.approx(0.55)
    assert float(cosine(110)) == pytest.approx(0.1)
    linear = training.learning_rate_schedule(training.TrainConfig(
        num_steps=110, learning_rate=1.0, warmup_steps=10, end_learning_rate=0.0, decay="linear"))
    assert float(linear(60)) == pytest.approx(0.5) and float(linear(110)) == pytest.approx(0.0)

    mask = training.weight_decay_mask(jax.eval_shape(lambda: init_params(TINY, jax.random.key(0))))
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["word_embeddings/embedding"] and flat["h/mlp/dense_h_to_4h/kernel"]
    assert flat["h/self_attention/query_key_value/kernel"]
    assert not flat["h/mlp/dense_h_to_4h/bias"] and not flat["ln_f/scale"] and not flat["ln_f/bias"]
    assert not flat["h/input_layernorm/scale"] and not flat["word_embeddings_layernorm/bias"]

    with pytest.raises(ValueError, match="not divisible by micro_batches"):
        training.TrainConfig(batch_size=6, micro_batches=4)
    with pytest.raises(ValueError, match="decay"):
        training.TrainConfig(decay="exponential")


def test_bf16_params_keep_a_bf16_optimizer_state():
    data = training.seqio_dataset(toy_dataset(toy_examples(8)), LENGTHS, 4, pack=True, seed=0)
    config = dataclasses.replace(TINY, dtype="bfloat16", param_dtype="bfloat16")
    tc = training.TrainConfig(num_steps=3, batch_size=4, learning_rate=1e-3, progress_bar=False)
    losses = []
    state = training.train(config, None, data, tc, one_device_mesh(), None,
                           on_step=lambda s, m: losses.append(float(m["loss"])))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state[1][0].mu)} == {np.dtype(jnp.bfloat16)}


def test_empty_or_malformed_data_is_a_clear_error():
    empty = toy_dataset([])
    tc = training.TrainConfig(num_steps=2, batch_size=2, progress_bar=False)
    with pytest.raises(training.TrainingDataError, match="ran out after 0 batches"):
        training.train(TINY, None, training.seqio_dataset(empty, LENGTHS, 2), tc, one_device_mesh(), None)
    with pytest.raises(training.TrainingDataError, match="'inputs' and 'targets'"):
        training.seqio_dataset(tf.data.Dataset.from_tensor_slices({"text": [[1, 2]]}), LENGTHS, 2)
    with pytest.raises(training.TrainingDataError, match="SeqIO task/mixture name or a tf.data.Dataset"):
        training.seqio_dataset([{"inputs": [1], "targets": [2]}], LENGTHS, 2)
    with pytest.raises(training.TrainingDataError, match="no_such_task"):
        training.seqio_dataset("no_such_task", LENGTHS, 2)


def test_trains_from_a_seqio_task_in_bf16_and_logs_to_tensorboard(tmp_path, bpe_tokenizer_dir, caplog):
    from mmst_jax.vocab import HFTokenizerVocabulary
    from seqio_tasks import register_pairs_task

    vocab = HFTokenizerVocabulary(bpe_tokenizer_dir)
    pairs = [(f"Q: what is {a} + {b}?\nA:", f" {a + b}") for a in range(10) for b in range(10)]

    name = register_pairs_task("test_training_sums", pairs, vocab)
    # The default policy: bf16 compute, fp32 parameters and optimizer state.
    config = BloomConfig(vocab_size=vocab.vocab_size, hidden_size=32, n_layer=1, n_head=4, dtype="bfloat16")
    data = training.seqio_dataset(name, {"inputs": 16, "targets": 8}, 4, pack=True, bos_id=vocab.start_id)
    tc = training.TrainConfig(num_steps=6, batch_size=4, log_every=2, checkpoint_every=4, progress_bar=False)
    with caplog.at_level(logging.INFO, logger="mmst_jax.training"):
        state = training.train(config, None, data, tc, one_device_mesh(), str(tmp_path))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state[1][0].nu)} == {np.dtype("float32")}

    (events,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    logged = {}
    for event in tf.compat.v1.train.summary_iterator(events):
        for value in event.summary.value:
            logged.setdefault(value.tag, []).append(event.step)
    for tag in ("loss", "accuracy", "learning_rate", "grad_norm", "z_loss", "target_tokens"):
        assert logged[f"train/{tag}"] == [2, 4, 6], tag
    assert logged["train/tokens_per_s"] == [4, 6]  # timed from the first log on (past compilation)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "6"]
    assert "step 6: " in caplog.text
