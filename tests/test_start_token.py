"""Where a sequence starts: the model reads a prompt in training exactly as the sampler is given it.

For a (prompt, completion) pair, the decoder input tokens of the training batch up to the end of the
prompt (`mmst run` fine-tuning, `mmst train` from JSONL and from a SeqIO task) are exactly the
tokens handed to the Sampler when the prompt is sampled (`generate_records`, `mmst sample`): the
start token (EOS, else BOS) then the prompt; the targets go on with the completion, then EOS.
"""

import json
import types

import jax
import pytest

import mmst_jax.training
import mmst_jax.training.loop
from mmst_jax.models.bloom import BloomConfig, init_params
from mmst_jax.models.orbax import Model
from mmst_jax.records import part_name, write_jsonl
from mmst_jax.sampling.sampler import Sampler
from mmst_jax.vocab import HFTokenizerVocabulary, VocabularyError, train_bpe_tokenizer

PROMPT = "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:"
COMPLETION = " He has 3 + 4 = 7 apples. The answer is 7."
LENGTHS = {"inputs": 64, "targets": 32}
FEW_SHOT = ("Question: Ann has 2 pens and gets 5 more. How many pens?\nAnswer: 2 + 5 = 7. The answer is 7.\n\n"
            "Question: A box holds 6 eggs. How many eggs in 3 boxes?\nAnswer: 6 * 3 = 18. The answer is 18.\n\n")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tokenizer.json trained here (BLOOM's special tokens: <unk> <s> </s> <pad>)."""
    path = tmp_path_factory.mktemp("start_token") / "tokenizer.json"
    texts = [PROMPT, COMPLETION, FEW_SHOT] + [f"Question: {a} + {b}?\nAnswer: {a + b}." for a in range(20)
                                             for b in range(20)]
    train_bpe_tokenizer(texts, vocab_size=400, path=path)
    return str(path)


class _Captured(Exception):
    """Raised by the stand-in for the training loop once it has the data it was given."""


def _capture_training_data(monkeypatch, module):
    """Replaces `module.train` with a stand-in that keeps its data argument and stops the job."""
    seen = {}

    def fake_train(config, init, data, *args, **kwargs):
        seen["data"] = data
        raise _Captured

    monkeypatch.setattr(module, "train", fake_train)
    return seen


def _recording_sampler(monkeypatch):
    """Sampler.generate records the token ids of every request it is handed (and the sampler), then
    samples as usual."""
    seen = {"tokens": [], "samplers": []}
    real = Sampler.generate

    def generate(self, requests, on_done=None):
        seen["tokens"] += [[int(t) for t in r.tokens] for r in requests]
        out = real(self, requests, on_done)
        seen["samplers"].append(self)
        return out

    monkeypatch.setattr(Sampler, "generate", generate)
    return seen


def _first_example(data) -> tuple[list[int], list[int]]:
    """(decoder input tokens, decoder target tokens) of the first example of the first batch."""
    batch = next(iter(data.as_numpy_iterator()))
    inputs, targets = batch["decoder_input_tokens"][0], batch["decoder_target_tokens"][0]
    keep = batch["decoder_segment_ids"][0] == 1  # every path packs
    return inputs[keep].tolist(), targets[keep].tolist()


def _check_matches_sampling(vocab, training_example, sampled: list[int]) -> None:
    inputs, targets = training_example
    prompt, completion = vocab.encode(PROMPT), vocab.encode(COMPLETION)
    assert inputs[:len(sampled)] == sampled  # the model reads the prompt as it is sampled
    assert inputs == sampled + completion  # ... then the completion
    assert targets[len(prompt):] == completion + [vocab.eos_id]  # scored on the completion, then EOS
    assert sampled == [vocab.eos_id] + prompt  # the rule: EOS, then the prompt


@pytest.fixture(scope="module")
def sampled_by_records(tokenizer, tmp_path_factory):
    """The tokens the Sampler is handed when `generate_records` samples PROMPT, and its records."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        seen = _recording_sampler(monkeypatch)
        vocab = HFTokenizerVocabulary(tokenizer)
        config = BloomConfig(vocab_size=512, hidden_size=32, n_layer=1, n_head=4)
        model = Model(config, init_params(config, jax.random.key(0)), vocab, "tiny")
        from mmst_jax.sampling.records import generate_records

        prompts = [{"problem_id": "p0", "dataset": "toy", "method": "text", "prompt": PROMPT, "gold": "7"}]
        part = generate_records(prompts, tmp_path_factory.mktemp("samples"), model, temperature=1.0,
                                num_samples=2, seed=0, round_index=1, max_new_tokens=4, batch_size=2,
                                progress=False)
    finally:
        monkeypatch.undo()
    (tokens,) = seen["tokens"]
    return tokens, [json.loads(line) for line in open(part)]


def test_the_start_token_is_eos_else_bos_else_an_error(tokenizer):
    from mmst_jax.vocab import start_id

    vocab = HFTokenizerVocabulary(tokenizer)
    assert vocab.start_id == start_id(vocab) == vocab.eos_id == 2  # BLOOM's </s>, also in the BPE tokenizer
    assert vocab.encode_prompts(["a b", ""]) == [[2] + vocab.encode("a b"), [2]]
    no_eos = HFTokenizerVocabulary(tokenizer, eos_token="<none>")
    assert no_eos.eos_id is None and no_eos.start_id == no_eos.bos_id == 1
    neither = HFTokenizerVocabulary(tokenizer, eos_token="<none>", bos_token="<none>")
    with pytest.raises(VocabularyError, match="neither an end-of-text"):
        neither.start_id
    with pytest.raises(VocabularyError, match="neither an end-of-text"):
        neither.encode_prompts(["a"])


def test_mmst_run_finetuning_reads_the_prompt_as_generate_records_samples_it(
        tokenizer, sampled_by_records, tmp_path, monkeypatch):
    from mmst_jax.mmst import finetune

    sampled, records = sampled_by_records
    train_dir = tmp_path / "train"
    record = {"problem_id": "p0", "dataset": "toy", "method": "text", "sample_index": 0, "round": 1,
              "prompt": PROMPT, "completion": COMPLETION, "gold": "7", "correct": True, "source": "self"}
    write_jsonl(train_dir / "text" / part_name(0, 1), [record])
    ctx = types.SimpleNamespace(tokenizer_path=tokenizer, config=types.SimpleNamespace(feature_lengths=LENGTHS),
                                host=0, hosts=1, mesh=None, rules=None)
    seen = _capture_training_data(monkeypatch, mmst_jax.training)
    with pytest.raises(_Captured):
        finetune.finetune(ctx, tmp_path / "checkpoint", BloomConfig.preset("tiny"), None,
                          mmst_jax.training.TrainConfig(batch_size=2), train_dir, seed=1)
    _check_matches_sampling(HFTokenizerVocabulary(tokenizer), _first_example(seen["data"]), sampled)
    # The records keep the prompt's text; completions are only new text.
    assert [r["prompt"] for r in records] == [PROMPT, PROMPT]
    assert all("</s>" not in r["completion"] for r in records)


def test_mmst_train_from_jsonl_reads_the_prompt_as_it_is_sampled(tokenizer, sampled_by_records, tmp_path,
                                                                  monkeypatch):
    from mmst_jax.training.finetune import finetune

    data_file = tmp_path / "train.jsonl"
    data_file.write_text(json.dumps({"inputs": PROMPT, "targets": COMPLETION}) + "\n")
    seen = _capture_training_data(monkeypatch, mmst_jax.training.loop)
    with pytest.raises(_Captured):
        finetune(str(data_file), str(tmp_path / "work"), tokenizer=tokenizer, task_feature_lengths=LENGTHS,
                 train_config=mmst_jax.training.TrainConfig(batch_size=2), export_model=False)
    _check_matches_sampling(HFTokenizerVocabulary(tokenizer), _first_example(seen["data"]), sampled_by_records[0])


def test_mmst_train_from_a_seqio_task_reads_the_prompt_as_it_is_sampled(tokenizer, sampled_by_records, tmp_path,
                                                                         monkeypatch):
    import seqio

    from mmst_jax.training.finetune import finetune
    from seqio_tasks import register_pairs_task

    vocab = HFTokenizerVocabulary(tokenizer)
    name = register_pairs_task("test_start_token_task", [(PROMPT, COMPLETION)], vocab)
    seen = _capture_training_data(monkeypatch, mmst_jax.training.loop)
    try:
        with pytest.raises(_Captured):
            finetune(None, str(tmp_path / "work"), mixture_or_task_name=name, task_feature_lengths=LENGTHS,
                     train_config=mmst_jax.training.TrainConfig(batch_size=2), export_model=False)
        _check_matches_sampling(vocab, _first_example(seen["data"]), sampled_by_records[0])
    finally:
        seqio.TaskRegistry.remove(name)


def test_mmst_sample_gives_the_sampler_the_prompt_as_training_reads_it(tokenizer, sampled_by_records, tmp_path,
                                                                      monkeypatch):
    from mmst_jax.sampling.job import sample

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"problem_id": "p0", "prompt": PROMPT}) + "\n")
    seen = _recording_sampler(monkeypatch)
    path = sample(str(prompts), str(tmp_path / "out"), tokenizer=tokenizer, model_preset="tiny", num_samples=2,
                  max_new_tokens=4, batch_size=2)
    vocab = HFTokenizerVocabulary(tokenizer)
    assert seen["tokens"] == [[vocab.eos_id] + vocab.encode(PROMPT)]  # EOS, then the prompt
    assert seen["tokens"] == [sampled_by_records[0]]  # the same ids as every other sampling path
    records = [json.loads(line) for line in open(path)]
    assert [r["prompt"] for r in records] == [PROMPT, PROMPT]


def test_prompts_sharing_a_few_shot_block_still_share_it_as_a_prefix(tokenizer, tmp_path, monkeypatch):
    from mmst_jax.sampling.records import generate_records

    vocab = HFTokenizerVocabulary(tokenizer)
    config = BloomConfig(vocab_size=512, hidden_size=32, n_layer=1, n_head=4)
    model = Model(config, init_params(config, jax.random.key(0)), vocab, "tiny")
    questions = ["Question: Bo has 4 cars and sells 1. How many?\nAnswer:",
                 "Question: A bag holds 9 nuts. How many nuts in 2 bags?\nAnswer:"]
    prompts = [{"problem_id": f"p{i}", "dataset": "toy", "method": "text", "prompt": FEW_SHOT + q, "gold": "3"}
               for i, q in enumerate(questions)]
    assert len(vocab.encode(FEW_SHOT)) >= 32
    seen = _recording_sampler(monkeypatch)
    generate_records(prompts, tmp_path / "samples", model, temperature=1.0, num_samples=2, seed=0, round_index=1,
                     max_new_tokens=4, batch_size=4, length_bucket=8, progress=False)
    assert seen["tokens"] == vocab.encode_prompts([p["prompt"] for p in prompts])
    (sampler,) = seen["samplers"]
    assert sampler.shared_tokens >= 32  # the start token and the few-shot block, prefilled once
