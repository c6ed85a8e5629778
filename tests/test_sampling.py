"""Sampling distributions, determinism over meshes, and the `mmst sample` job."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from mmst_jax.sampling import decode
from mmst_jax.models.bloom import BloomConfig, BloomForCausalLM, init_params
from mmst_jax.sampling.job import sample
from mmst_jax.sampling.sampler import Request, Sampler
from mmst_jax.sampling.stop_strings import StopStringError

PAD = 3


def reference_distribution(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """transformers' warpers (temperature, then top-k, then top-p) and a softmax: the exact
    distribution of the next token."""
    scores = torch.tensor(logits[None], dtype=torch.float32)
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)[0].double().numpy()


@pytest.fixture(scope="module")
def peaked_model():
    """A tiny BLOOM whose next-token distribution has a few likely and many unlikely tokens."""
    config = BloomConfig(vocab_size=96, hidden_size=32, n_layer=2, n_head=4, initializer_range=0.4)
    params = init_params(config, jax.random.key(3))
    prompt = [7, 19, 33, 50, 61]
    logits = np.asarray(BloomForCausalLM(config).apply({"params": params}, jnp.asarray([prompt]))[0, -1])
    return config, params, prompt, logits


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.3, 8, 1.0), (1.0, 0, 0.8),
                                                     (0.8, 12, 0.9)])
def test_next_token_frequencies_match_the_filtered_softmax(peaked_model, temperature, top_k, top_p):
    config, params, prompt, logits = peaked_model
    expected = reference_distribution(logits, temperature, top_k, top_p)
    support = expected > 0
    assert 4 <= support.sum() < config.vocab_size or (top_k == 0 and top_p == 1.0)
    draws = 12000
    sampling = decode.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=1)
    sampler = Sampler(config, params, sampling, eos_id=None, pad_id=PAD, slots=1000)
    rows = sampler.sample([prompt], num_samples=draws, seed=1234)[0]
    counts = np.bincount([r[0] for r in rows], minlength=config.vocab_size)
    # Nothing outside the filtered support is ever drawn.
    assert counts[~support].sum() == 0
    # Pearson chi-square over the support (tokens expected fewer than 5 times pooled in one bin).
    big = support & (expected * draws >= 5)
    observed = np.append(counts[big], counts[support & ~big].sum())
    wanted = np.append(expected[big], expected[support & ~big].sum()) * draws
    keep = wanted > 0
    wanted = wanted[keep] / wanted[keep].sum() * draws  # exact float totals, as scipy requires
    p_value = stats.chisquare(observed[keep], wanted).pvalue
    assert p_value > 1e-3, (p_value, observed, wanted)
    assert 0.5 * np.abs(counts / draws - expected).sum() < 0.03  # total variation
    # The test has power: the unfiltered softmax (or the wrong temperature) is rejected.
    wrong = reference_distribution(logits, temperature * 1.5, 0, 1.0)
    wrong_wanted = np.append(wrong[big], wrong[~big].sum())
    wrong_wanted = wrong_wanted / wrong_wanted.sum() * draws
    assert stats.chisquare(observed, wrong_wanted).pvalue < 1e-6


MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from mmst_jax.sampling import decode
    from mmst_jax.sampling.sampler import Sampler
    from mmst_jax.models.bloom import BloomConfig, init_params
    from mmst_jax.models.bloom_cache import cache_logical_axes, init_cache
    from mmst_jax.sharding import DEFAULT_RULES, logical_to_sharding, make_mesh

    config = BloomConfig(vocab_size=128, hidden_size=64, n_layer=2, n_head=4, initializer_range=0.3)
    params = init_params(config, jax.random.key(0))
    rs = np.random.RandomState(0)
    prefix = rs.randint(4, 128, size=16).tolist()
    prompts = [prefix + rs.randint(4, 128, size=n).tolist() for n in (3, 9, 1)]
    sampling = decode.SamplingConfig(temperature=1.0, top_k=40, top_p=0.9, max_new_tokens=12)
    results, programs = {}, {}
    for shape in [None, (8, 1, 1), (2, 2, 2), (1, 2, 4)]:
        mesh = None if shape is None else make_mesh(shape, jax.devices()[:8])
        # 2 slots (rounded up to divide over the mesh's rows): rows wait and refill freed slots.
        sampler = Sampler(config, params, sampling, eos_id=None, pad_id=3, mesh=mesh, length_bucket=8, slots=2)
        before = {name: getattr(decode, name)._cache_size() for name in ("generate", "insert")}
        results[str(shape)] = sampler.sample(prompts, num_samples=2, seed=7)
        programs[str(shape)] = {name: getattr(decode, name)._cache_size() - n for name, n in before.items()}
        assert sampler.shared_tokens == 16
    results["programs"] = programs
    mesh = make_mesh((2, 2, 2), jax.devices()[:8])
    cache = init_cache(config, 4, 8)
    spec = logical_to_sharding(cache_logical_axes(cache), mesh, DEFAULT_RULES)["key"][0].spec
    results["cache_spec"] = [list(a) if isinstance(a, tuple) else a for a in spec]
    print(json.dumps(results))
""")


def test_samples_are_the_same_whatever_the_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    # The cache is split by its logical axes: rows over (data, fsdp), heads over tensor.
    assert results.pop("cache_spec") == [["data", "fsdp"], "tensor", None, None]
    # One decode loop and one insert program per mesh, however often the slots are refilled: the
    # state every program returns is laid out as the next call's input was.
    assert results.pop("programs") == {str(s): {"generate": 1, "insert": 1}
                                       for s in (None, (8, 1, 1), (2, 2, 2), (1, 2, 4))}
    single = results.pop("None")
    for shape, samples in results.items():
        assert samples == single, shape
    flat = [t for prompt in single for row in prompt for t in row]
    assert len(flat) == 3 * 2 * 12 and len(set(flat)) > 10  # real samples, not a constant
    assert single[0][0] != single[0][1]  # the two samples of a prompt differ


def test_rows_are_the_same_whatever_slot_or_batch_they_land_in(peaked_model):
    config, params, _, _ = peaked_model
    rs = np.random.RandomState(4)
    prompts = [rs.randint(4, 96, size=n).tolist() for n in (5, 12, 3, 8, 20, 1)]
    limits = [16, 3, 9, 1, 12, 6]  # rows of every length: slots free up at different steps
    sampling = decode.SamplingConfig(temperature=1.0, top_k=20, top_p=0.95, max_new_tokens=16)

    def run(order, slots):
        sampler = Sampler(config, params, sampling, eos_id=2, pad_id=PAD, slots=slots, length_bucket=32)
        out = sampler.generate([Request(prompts[i], decode.row_keys(11, [i] * 3, range(3)), limits[i])
                                for i in order])
        return dict(zip(order, out))

    alone = {i: run([i], 1)[i] for i in range(len(prompts))}  # each prompt on its own, one slot
    for order, slots in [(range(6), 3), ([5, 2, 0, 4, 1, 3], 7), ([3, 1, 5], 3)]:
        assert run(order, slots) == {i: alone[i] for i in order}, (order, slots)
    flat = [row for i in alone for row in alone[i]]
    assert all(len(row) <= limits[i] for i in alone for row in alone[i])
    assert len({tuple(r) for r in flat}) > 12  # real samples: the 3 samples of a prompt differ


def test_sample_command_writes_records_with_k_samples_and_stop_strings(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    few_shot = "Question: 2 + 2?\nSolution: 4.\n\nQuestion: 3 + 5?\nSolution: 8.\n\n"
    with open(prompts, "w") as f:
        for i, q in enumerate(["1 + 6?", "7 + 2?", "4 + 4?"]):
            f.write(json.dumps({"prompt": few_shot + f"Question: {q}\nSolution:", "problem_id": f"p{i}",
                                "dataset": "toy", "method": "text", "gold": "7"}) + "\n")
    path = sample(str(prompts), str(tmp_path / "out"), num_samples=3, max_new_tokens=16,
                  stop_strings=("\n\n", "Question"), temperature=1.0, batch_size=4, seed=5)
    assert os.path.basename(path) == "part-00000-of-00001.jsonl"
    records = [json.loads(line) for line in open(path)]
    assert [(r["problem_id"], r["sample_index"]) for r in records] == [
        (f"p{i}", j) for i in range(3) for j in range(3)]
    for r in records:
        assert set(r) == {"problem_id", "dataset", "method", "sample_index", "round", "prompt",
                          "completion", "gold", "seed"}
        assert "\n\n" not in r["completion"] and "Question" not in r["completion"]
        assert (r["dataset"], r["method"], r["seed"], r["gold"]) == ("toy", "text", 5, "7")


def test_sample_command_rejects_bad_requests(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        sample(str(empty), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        sample(None, str(tmp_path / "out"), num_samples=0)
    with pytest.raises(StopStringError, match="can never be detected"):
        sample(None, str(tmp_path / "out"), stop_strings=("",))
    with pytest.raises(decode.SamplingError, match="cache"):
        sample(None, str(tmp_path / "out"), max_cache_length=20)


def test_sample_command_reads_a_seqio_task(tmp_path, bpe_tokenizer_dir):
    import seqio
    import tensorflow as tf

    from mmst_jax.vocab import HFTokenizerVocabulary

    vocab = HFTokenizerVocabulary(bpe_tokenizer_dir)
    examples = {"inputs": ["Question: 2 + 3?\nSolution:", "Question: 4 * 5?\nSolution:"],
                "targets": ["5", "20"], "problem_id": ["a", "b"], "dataset": ["toy", "toy"],
                "method": ["code", "code"], "gold": ["5", "20"]}
    name = "test_sampling_toy_task"
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(examples),
            splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize],
        output_features={"inputs": seqio.Feature(vocab, add_eos=False),
                         "targets": seqio.Feature(vocab, add_eos=True)})
    path = sample(None, str(tmp_path), task=name, num_samples=2, max_new_tokens=4,
                  tokenizer=str(bpe_tokenizer_dir), model_preset="tiny")
    records = [json.loads(line) for line in open(path)]
    assert [(r["problem_id"], r["sample_index"], r["method"], r["gold"]) for r in records] == [
        ("a", 0, "code", "5"), ("a", 1, "code", "5"), ("b", 0, "code", "20"), ("b", 1, "code", "20")]
    assert records[0]["prompt"] == examples["inputs"][0]
