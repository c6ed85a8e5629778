"""BLOOM in Flax against `transformers.BloomForCausalLM` (torch, CPU) as the reference."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bloom_reference import left_padded_batch, random_hf_bloom
from mmst_jax.sampling.decode import SamplingConfig
from mmst_jax.sampling.sampler import Sampler
from mmst_jax.models.bloom import (BloomConfig, BloomForCausalLM, BloomConfigError, alibi_slopes,
                                   init_params, token_positions)
from mmst_jax.models.hf import load_bloom, save_bloom


@pytest.fixture(scope="module", params=[4, 6, 14], ids=lambda h: f"{h}heads")
def reference(request, tmp_path_factory):
    """(hf_model, our config, our params) for a random BLOOM with this many heads."""
    hf_model = random_hf_bloom(request.param, seed=request.param)
    path = tmp_path_factory.mktemp(f"hf{request.param}")
    hf_model.save_pretrained(path)
    config, params = load_bloom(path)
    return hf_model, config, params, path


def hf_logits(hf_model, ids, mask):
    with torch.no_grad():
        return hf_model(torch.tensor(ids, dtype=torch.long),
                        attention_mask=torch.tensor(mask)).logits.numpy()


def test_logits_match_transformers_with_left_padding(reference):
    hf_model, config, params, _ = reference
    ids, mask = left_padded_batch([11, 7, 3, 11], config.vocab_size, seed=1)
    ours = np.asarray(BloomForCausalLM(config).apply({"params": params}, ids, mask))
    ref = hf_logits(hf_model, ids, mask)
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() <= 1e-4


def test_greedy_continuations_match_transformers_generate(reference):
    hf_model, config, params, _ = reference
    ids, mask = left_padded_batch([9, 4, 13], config.vocab_size, seed=2)
    with torch.no_grad():
        ref = hf_model.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                                max_new_tokens=32, do_sample=False, pad_token_id=3,
                                eos_token_id=2).numpy()[:, ids.shape[1]:]
    prompts = [row[m == 1].tolist() for row, m in zip(ids, mask)]
    sampler = Sampler(config, params, SamplingConfig(max_new_tokens=32), eos_id=2, pad_id=3, share_prefix=False,
                      slots=2)  # fewer slots than rows: the third row starts when one stops
    ours = sampler.sample(prompts, num_samples=1, seed=0)
    assert ref.shape[1] >= 1
    for (row,), ref_row in zip(ours, ref.tolist()):
        # HF stops generating once every row has hit EOS; we return a row up to its EOS.
        assert row == (ref_row[:ref_row.index(2)] if 2 in ref_row else ref_row)
    # The continuations are not degenerate: a test over all-identical tokens would prove little.
    assert len(np.unique(ref)) > 5


def test_hf_ours_hf_round_trip_is_identical(reference, tmp_path):
    hf_model, config, params, _ = reference
    save_bloom(config, params, tmp_path / "out")
    import transformers

    reloaded = transformers.BloomForCausalLM.from_pretrained(tmp_path / "out")
    original = hf_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name


def test_alibi_slopes_match_bloom_for_any_head_count():
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    for n_head in [1, 2, 3, 4, 5, 6, 8, 12, 14, 16, 32, 96, 112]:
        expected = _get_alibi_slopes(n_head, torch.device("cpu")).numpy()
        np.testing.assert_allclose(alibi_slopes(n_head), expected, rtol=1e-6)


def test_right_padding_leaves_real_positions_unchanged(reference):
    _, config, params, _ = reference
    model = BloomForCausalLM(config)
    ids, _ = left_padded_batch([8], config.vocab_size, seed=3)
    alone = np.asarray(model.apply({"params": params}, ids))
    padded = np.concatenate([ids, np.full((1, 5), 3, np.int32)], axis=1)
    mask = np.concatenate([np.ones((1, 8), np.int32), np.zeros((1, 5), np.int32)], axis=1)
    out = np.asarray(model.apply({"params": params}, padded, mask))
    np.testing.assert_allclose(out[:, :8], alone, atol=1e-4)


def test_packed_examples_do_not_see_each_other(reference):
    _, config, params, _ = reference
    model = BloomForCausalLM(config)
    a, _ = left_padded_batch([5], config.vocab_size, seed=4)
    b, _ = left_padded_batch([7], config.vocab_size, seed=5)
    packed = np.concatenate([a, b, np.full((1, 3), 0, np.int32)], axis=1)
    segments = np.array([[1] * 5 + [2] * 7 + [0] * 3], np.int32)
    out = np.asarray(model.apply({"params": params}, packed, segment_ids=segments))
    np.testing.assert_allclose(out[:, :5], model.apply({"params": params}, a), atol=1e-4)
    np.testing.assert_allclose(out[:, 5:12], model.apply({"params": params}, b), atol=1e-4)
    # And the positions restart per segment (ALiBi would otherwise shift nothing, but the test
    # above only passes if segment 2 is blind to segment 1).
    np.testing.assert_array_equal(
        token_positions(jnp.asarray(segments != 0), jnp.asarray(segments)),
        [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0]])


def test_bf16_compute_stays_close_to_fp32(reference):
    _, config, params, _ = reference
    ids, mask = left_padded_batch([12, 6], config.vocab_size, seed=6)
    fp32 = np.asarray(BloomForCausalLM(config).apply({"params": params}, ids, mask))
    bf16_config = dataclasses.replace(config, dtype="bfloat16")
    bf16 = np.asarray(BloomForCausalLM(bf16_config).apply({"params": params}, ids, mask),
                      dtype=np.float32)
    real = mask.astype(bool)
    # Stated tolerance: bf16 keeps 8 mantissa bits. Measured through 3 layers: max |diff| 1-3% of
    # the largest |logit|, mean |diff| 0.7-1.5% of the logits' standard deviation.
    diff = np.abs(bf16 - fp32)[real]
    assert diff.max() <= 0.05 * np.abs(fp32[real]).max()
    assert diff.mean() <= 0.025 * fp32[real].std()


@pytest.mark.parametrize("policy", ["full", "dots", "nothing_saveable"])
def test_remat_policies_give_the_same_gradients(policy):
    config = BloomConfig.preset("tiny", vocab_size=128, n_layer=3)
    params = init_params(config, jax.random.key(1))
    ids, mask = left_padded_batch([9, 5], 128, seed=7)

    def loss(p, cfg):
        logits = BloomForCausalLM(cfg).apply({"params": p}, ids, mask)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 5])

    plain = jax.grad(loss)(params, config)
    remat = jax.grad(loss)(params, dataclasses.replace(config, remat_policy=policy))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_parameter_and_activation_has_logical_axes():
    config = BloomConfig.preset("tiny")
    variables = jax.eval_shape(lambda: BloomForCausalLM(config).init(
        jax.random.key(0), jnp.ones((1, 4), jnp.int32)))
    boxed = jax.tree.leaves(variables["params"], is_leaf=lambda x: hasattr(x, "names"))
    assert boxed and all(hasattr(b, "names") and len(b.names) == len(b.value.shape) for b in boxed)
    stacked = [b for b in boxed if b.names[0] == "layers"]
    assert len(stacked) == 12  # every per-layer parameter is stacked on the `layers` axis


def test_presets_have_the_published_sizes():
    # Parameter counts of the published checkpoints (embeddings counted once: tied LM head).
    expected = {"bloom-560m": 559_214_592, "bloom-1b1": 1_065_314_304, "bloom-1b7": 1_722_408_960,
                "bloom-3b": 3_002_557_440, "bloom-7b1": 7_069_016_064, "bloom-176b": 176_247_271_424}
    for name, count in expected.items():
        assert BloomConfig.preset(name).num_params() == count, name
    assert BloomConfig.preset("bloom-176b").n_head == 112


def test_from_hf_accepts_both_spellings_and_reads_special_ids():
    published_176b = {"model_type": "bloom", "n_embed": 14336, "n_layer": 70,
                      "num_attention_heads": 112, "vocab_size": 250880, "unk_token_id": 0,
                      "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
    config = BloomConfig.from_hf(published_176b)
    assert config == BloomConfig.preset("bloom-176b")
    modern = {"model_type": "bloom", "hidden_size": 64, "num_hidden_layers": 2, "n_head": 4,
              "vocab_size": 100, "pad_token_id": 7, "eos_token_id": [5]}
    config = BloomConfig.from_hf(modern)
    assert (config.hidden_size, config.n_layer, config.n_head) == (64, 2, 4)
    assert (config.pad_token_id, config.eos_token_id) == (7, 5)


def test_config_errors_name_the_problem():
    with pytest.raises(BloomConfigError, match="model_type='gpt2'"):
        BloomConfig.from_hf({"model_type": "gpt2", "n_embd": 64})
    with pytest.raises(BloomConfigError, match="not divisible by n_head"):
        BloomConfig(hidden_size=60, n_head=8)
    with pytest.raises(BloomConfigError, match="unknown BLOOM preset"):
        BloomConfig.preset("bloom-9000b")
    with pytest.raises(BloomConfigError, match="remat_policy"):
        BloomConfig(remat_policy="sometimes")
    assert math.isclose(alibi_slopes(8)[0], 0.5)
