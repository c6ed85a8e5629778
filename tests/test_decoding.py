"""KV-cached decoding against `transformers` generate: shared prefixes, stop strings, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bloom_reference import random_hf_bloom
from mmst_jax.sampling import decode
from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, init_params
from mmst_jax.models.bloom_cache import cached_forward, decoding_params, init_cache
from mmst_jax.sampling.sampler import Request, Sampler
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
    sampler = Sampler(config, params, decode.SamplingConfig(max_new_tokens=24), eos_id=EOS,
                             pad_id=PAD, length_bucket=4)
    ours = sampler.sample(prompts, num_samples=2, seed=0)
    assert sampler.shared_tokens == 20  # the common 21 tokens, rounded down to the bucket of 4
    for row, ref_row in zip(ours, ref):
        assert row == [ref_row, ref_row]  # greedy: both samples of a prompt are the reference
    assert len({t for r in ref for t in r}) > 8  # not a degenerate continuation


def test_prefill_and_a_decode_step_give_the_logits_of_the_whole_sequence(model6):
    _, config, params = model6
    model, split = BloomForCausalLM(config), decoding_params(params)
    rs = np.random.RandomState(6)
    prefix = jnp.asarray(rs.randint(4, 320, size=(1, 9)), jnp.int32)
    own = [rs.randint(4, 320, size=n).tolist() for n in (4, 2)]
    ids = np.full((2, 6), PAD, np.int32)  # right-padded to 6
    for row, tokens in enumerate(own):
        ids[row, :len(tokens)] = tokens
    lengths = jnp.asarray([4, 2], jnp.int32)
    prefix_cache = decode.prefill_prefix(split, prefix, config=config)
    # The prefix is held once: no batch axis, [heads, P, head_dim] per layer.
    assert prefix_cache["prefix_key"][0].shape == (config.n_head, 9, config.head_dim)
    kv, logits = decode.prefill(split, prefix_cache, ids, lengths, config=config)
    nxt = jnp.asarray([[17], [250]], jnp.int32)
    cache = init_cache(config, 2, 8, prefix=decode.prefill_prefix(split, prefix, config=config))
    cache = {**cache, **{name: tuple(c.at[:, :, :6].set(x) for c, x in zip(cache[name], kv[name]))
                         for name in ("key", "value")}}
    step_logits, _ = cached_forward(config, split, cache, nxt, lengths)
    for row, tokens in enumerate(own):
        whole = jnp.concatenate([prefix[0], jnp.asarray(tokens + [int(nxt[row, 0])])])[None]
        expected = model.apply({"params": params}, whole)[0]
        np.testing.assert_allclose(logits[row], expected[-2], atol=1e-5)
        np.testing.assert_allclose(step_logits[row], expected[-1], atol=1e-5)


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
    sampler = Sampler(config, params, decode.SamplingConfig(max_new_tokens=24), eos_id=EOS,
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


def test_a_row_stopping_at_its_first_token_and_one_that_never_stops_share_the_slots():
    config = BloomConfig.preset("tiny", vocab_size=64)
    params = init_params(config, jax.random.key(0))
    sampling = decode.SamplingConfig(max_new_tokens=40)
    short, long = [5, 6, 7], [8, 9]
    free = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, share_prefix=False, slots=1)
    (a,), (b,) = free.sample([short, long], num_samples=1, seed=0)
    assert len(a) == len(b) == 40
    # EOS := the short prompt's first (greedy) token, which the long row never draws: the short row
    # stops at step 1 (its EOS dropped), the long one runs to max_new_tokens.
    eos = a[0]
    assert eos not in b
    for slots in (2, 1):
        sampler = Sampler(config, params, sampling, eos_id=eos, pad_id=PAD, share_prefix=False, slots=slots)
        out = sampler.sample([short, long, short], num_samples=1, seed=0)
        assert out == [[[]], [b], [[]]]
        assert sampler.steps == 39  # 39 steps after the first token, whatever the slots
    # And the loop stops as soon as every row has: a stop string matched by every first token.
    token_bytes = [b"X" if i in (a[0], b[0]) else b"a" for i in range(64)]
    sampler = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, share_prefix=False, slots=2,
                      stop=decode.StopStrings(["X"], token_bytes))
    assert sampler.sample([short, long], num_samples=1, seed=0) == [[[a[0]]], [[b[0]]]]
    assert sampler.steps == 0


def test_requests_sharing_nothing_decode_side_by_side_in_one_run():
    config = BloomConfig.preset("tiny", vocab_size=64)
    params = init_params(config, jax.random.key(0))
    sampling = decode.SamplingConfig(max_new_tokens=6)
    rs = np.random.RandomState(3)
    plain = [[10 + i] + rs.randint(4, 64, size=n).tolist() for i, n in enumerate((5, 9, 3, 7, 4, 8, 6, 2))]
    sampler = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, slots=4, length_bucket=4)
    out = sampler.sample(plain, num_samples=1, seed=0)
    assert sampler.steps == 2 * 5  # 8 rows in 4 slots: two waves of 5 steps, not a run of 5 per prompt
    unshared = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, slots=4, share_prefix=False)
    assert out == unshared.sample(plain, num_samples=1, seed=0)

    # A block shared by rows enough to fill the slots is prefilled once, in a run of its own; one
    # shared by fewer rows joins the plain run of its neighbours (unless it is all there is).
    block = rs.randint(4, 64, size=8).tolist()
    requests = [Request(p, decode.row_keys(0, [i], [0]))
                for i, p in enumerate([block + p for p in plain[:4]] + plain[4:])]
    assert sampler._runs(requests) == [(0, 4, 8), (4, 8, 0)]
    wide = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, slots=8, length_bucket=4)
    assert wide._runs(requests) == [(0, 8, 0)]
    assert wide._runs(requests[:4]) == [(0, 4, 8)]
    assert wide._runs(requests[4:]) == [(0, 4, 0)]


def test_refilled_slots_give_every_row_its_own_tokens(model6):
    hf_model, config, params = model6
    rs = np.random.RandomState(8)
    prompts = [rs.randint(4, 320, size=n).tolist() for n in (7, 3, 12, 5, 9)]
    limits = [24, 2, 17, 1, 9]
    ref = hf_greedy(hf_model, prompts, 24)
    sampler = Sampler(config, params, decode.SamplingConfig(max_new_tokens=24), eos_id=EOS, pad_id=PAD,
                      length_bucket=4, slots=2)
    out = sampler.generate([Request(p, decode.row_keys(0, [i, i], [0, 1]), max_new_tokens=n)
                            for i, (p, n) in enumerate(zip(prompts, limits))])
    for samples, ref_row, n in zip(out, ref, limits):
        assert samples == [ref_row[:n], ref_row[:n]]  # greedy: both samples are the reference's start
    assert sampler.steps < sum(limits) * 2  # rows decoded side by side


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
    sampler = Sampler(config, params, decode.SamplingConfig(max_new_tokens=8), eos_id=EOS,
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
