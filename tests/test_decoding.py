"""KV-cached decoding against `transformers` generate: shared prefixes, stop strings, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bloom_reference import random_hf_bloom
from mmst_jax.sampling import decode
from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, init_cache, init_params
from mmst_jax.models.hf import load_bloom
from mmst_jax.vocab import HFTokenizerVocabulary
from mmst_jax.sampling.stop_strings import StopStringError

EOS, PAD = 2, 3


def hf_and_ours(n_head, vocab_size, tmp_path, seed):
    hf_model = random_hf_bloom(n_head, vocab_size=vocab_size, seed=seed)
    hf_model.save_pretrained(tmp_path)
    config, params = load_bloom(tmp_path)
    return hf_model, config, params


def hf_greedy(hf_model, prompts, max_new_tokens):
    """transformers' greedy continuations of token prompts (left-padded together), as lists."""
    ids, mask = decode.left_pad(prompts, PAD)
    with torch.no_grad():
        out = hf_model.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=PAD,
                                eos_token_id=EOS).numpy()[:, ids.shape[1]:]
    rows = []
    for row in out.tolist():  # up to (not including) EOS, as the Sampler returns them
        rows.append(row[:row.index(EOS)] if EOS in row else row)
    return rows


@pytest.fixture(scope="module")
def model6(tmp_path_factory):
    return hf_and_ours(6, 320, tmp_path_factory.mktemp("hf6"), seed=2)


def test_shared_prefix_greedy_matches_transformers(model6):
    hf_model, config, params = model6
    rs = np.random.RandomState(5)
    prefix = rs.randint(4, 320, size=21).tolist()
    prompts = [prefix + rs.randint(4, 320, size=n).tolist() for n in (6, 1, 11)]
    ref = hf_greedy(hf_model, prompts, 24)
    sampler = decode.Sampler(config, params, decode.SamplingConfig(max_new_tokens=24), eos_id=EOS,
                             pad_id=PAD, length_bucket=4)
    ours = sampler.sample(prompts, num_samples=2, seed=0)
    assert sampler.shared_tokens == 20  # the common 21 tokens, rounded down to the bucket of 4
    for row, ref_row in zip(ours, ref):
        assert row == [ref_row, ref_row]  # greedy: both samples of a prompt are the reference
    assert len({t for r in ref for t in r}) > 8  # not a degenerate continuation


def test_prefix_cache_gives_the_logits_of_the_whole_prompt(model6):
    _, config, params = model6
    model = BloomForCausalLM(config)
    rs = np.random.RandomState(6)
    prefix = jnp.asarray(rs.randint(4, 320, size=(1, 9)), jnp.int32)
    suffix_ids, suffix_mask = decode.left_pad([rs.randint(4, 320, size=n).tolist() for n in (4, 2)], PAD)
    prefix_cache = decode.prefill_prefix(params, prefix, config=config)
    cache = init_cache(config, 2, suffix_ids.shape[1], prefix=prefix_cache)
    # The prefix is held once: no batch axis, [layers, heads, P, head_dim].
    assert cache["prefix_key"].shape == (config.n_layer, config.n_head, 9, config.head_dim)
    logits, _ = model.apply({"params": params, "cache": cache}, suffix_ids, suffix_mask, decode=True,
                            prefill=True, mutable=["cache"])
    for row in range(2):
        n = int(suffix_mask[row].sum())
        whole = jnp.concatenate([prefix[0], jnp.asarray(suffix_ids[row, -n:])])[None]
        expected = model.apply({"params": params}, whole)
        np.testing.assert_allclose(logits[row, -n:], expected[0, -n:], atol=1e-5)


@pytest.fixture(scope="module")
def model_with_tokenizer(tmp_path_factory, bpe_tokenizer_dir):
    vocab = HFTokenizerVocabulary(bpe_tokenizer_dir)
    hf_model, config, params = hf_and_ours(4, vocab.vocab_size, tmp_path_factory.mktemp("hf4"), seed=3)
    return hf_model, config, params, vocab


def test_stop_strings_end_rows_where_the_text_first_contains_them(model_with_tokenizer):
    hf_model, config, params, vocab = model_with_tokenizer
    prompts = vocab.encode_batch(["Natalia sold clips to 48 of her friends", "def solution():\n",
                                  "The answer is", "Weng earns $12 an hour for babysitting."])
    ref = hf_greedy(hf_model, prompts, 24)
    # Stop strings taken from the reference text, straddling token boundaries (they start and end
    # inside tokens), one reached by each of the first two rows; the others run to the end.
    stops = []
    for row, at in ((0, 5), (1, 9)):
        before, upto = len(vocab.decode(ref[row][:at])), len(vocab.decode(ref[row][:at + 1]))
        stops.append(vocab.decode(ref[row])[max(before - 1, 0):upto + 1])
    assert all(stops)
    stop = decode.StopStrings(stops, decode.token_bytes(vocab))
    sampler = decode.Sampler(config, params, decode.SamplingConfig(max_new_tokens=24), eos_id=EOS,
                             pad_id=PAD, stop=stop, length_bucket=4)
    ours = sampler.sample(prompts, num_samples=1, seed=0)
    stopped = 0
    for row, ref_row in zip(ours, ref):
        # Reference: the first n whose decoded text contains a stop string; the text cut before it.
        hits = [n for n in range(1, len(ref_row) + 1) if any(s in vocab.decode(ref_row[:n]) for s in stops)]
        n = hits[0] if hits else len(ref_row)
        assert row[0] == ref_row[:n]
        text = vocab.decode(ref_row[:n])
        cut = min([text.find(s) for s in stops if s in text], default=len(text))
        assert stop.truncate(vocab.decode(row[0])) == text[:cut]
        stopped += bool(hits)
    assert stopped >= 2


def test_the_loop_ends_when_every_row_has_stopped():
    config = BloomConfig.preset("tiny", vocab_size=64)
    params = init_params(config, jax.random.key(0))
    ids, mask = decode.left_pad([[5, 6, 7], [8, 9]], PAD)
    sampling = decode.SamplingConfig(max_new_tokens=40)
    tokens, lengths, steps = decode.decode(params, ids, mask, jax.random.key(0), config=config,
                                           sampling=sampling, eos_id=None, pad_id=PAD)
    assert int(steps) == 40 and lengths.tolist() == [40, 40]
    # Make each row's greedy token its EOS: every row stops at once and the loop runs no step.
    first = tokens[:, 0].tolist()
    stop_table = np.zeros((2, 64), np.int32)
    stop_table[:, first] = 1  # state 1 (the last) = matched
    tokens, lengths, steps = decode.decode(params, ids, mask, jax.random.key(0), config=config,
                                           sampling=sampling, eos_id=None, pad_id=PAD,
                                           stop_table=jnp.asarray(stop_table))
    assert int(steps) == 1 and lengths.tolist() == [1, 1]
    assert (np.asarray(tokens)[:, 1:] == PAD).all()


def brute_force_stop(sequence, token_bytes, patterns):
    text = b""
    for n, t in enumerate(sequence, 1):
        text += token_bytes[t]
        if any(p.encode() in text for p in patterns):
            return n
    return None


def test_stop_automaton_matches_a_substring_search():
    token_bytes = [b"", b"a", b"b", b"ab", b"ba", b"\n", b"\n\n", b"Q", b"\nQ:", b"a\n", b"\xc3", b"\xa9",
                   b"\xc3\xa9t\xc3\xa9"]
    patterns = ["\n\nQ", "aab", "\u00e9t", "ba\n"]
    stop = decode.StopStrings(patterns, token_bytes)
    rs = np.random.RandomState(0)
    matched = 0
    for _ in range(3000):
        sequence = rs.randint(0, len(token_bytes), size=12).tolist()
        state, found = 0, None
        for n, t in enumerate(sequence, 1):
            state = stop.device_table[state, t]
            if state == stop.device_table.shape[0] - 1:
                found = n
                break
        assert found == brute_force_stop(sequence, token_bytes, patterns), sequence
        matched += found is not None
    assert 300 < matched < 2700  # both outcomes are well exercised


def test_bad_input_gives_clear_errors():
    config = BloomConfig.preset("tiny", vocab_size=64)
    params = init_params(config, jax.random.key(0))
    sampler = decode.Sampler(config, params, decode.SamplingConfig(max_new_tokens=8), eos_id=EOS,
                             pad_id=PAD, max_cache_length=16)
    with pytest.raises(decode.SamplingError, match="needs 17 cache slots but the cache holds 16"):
        sampler.sample([[5] * 9], num_samples=1, seed=0)
    assert len(sampler.sample([[5] * 8], num_samples=1, seed=0)[0][0]) <= 8  # exactly fits
    with pytest.raises(decode.SamplingError, match="no prompts"):
        sampler.sample([], num_samples=1, seed=0)
    with pytest.raises(decode.SamplingError, match="num_samples must be >= 1"):
        sampler.sample([[5, 6]], num_samples=0, seed=0)
    with pytest.raises(decode.SamplingError, match="prompt is empty"):
        sampler.sample([[5, 6], []], num_samples=1, seed=0)
    token_bytes = [b"", b"a", b"b", b"\n"]
    with pytest.raises(StopStringError, match="'' can never be detected"):
        decode.StopStrings(["\n", ""], token_bytes)
    with pytest.raises(StopStringError, match="'c' can never be detected"):
        decode.StopStrings(["\n", "c"], token_bytes)
    with pytest.raises(decode.SamplingError, match="top_p must be in"):
        decode.SamplingConfig(top_p=0.0)
