"""The SeqIO side: token budgets with a BLOOM-format tokenizer, datasets through the decoder feature
converter, training tasks and mixtures over run-time files, translation tasks, and `mmst tasks`."""

import json
import os

import gin
import numpy as np
import pytest
import seqio

import tasks
from tasks import config, prompts, records
from mmst_jax.cli import tasks as command
from tasks.catalog import get_task_info
from tasks.vocabulary import DeferredVocabulary

REAL_TASKS = [n for n in tasks.TASK_NAMES if get_task_info(n).kind == "few_shot"]


@pytest.fixture(scope="module", autouse=True)
def tokenizer_env(bpe_tokenizer_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.TOKENIZER_ENV, str(bpe_tokenizer_dir))
        yield


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="module")
def vocab():
    return DeferredVocabulary()


@pytest.mark.parametrize("name", REAL_TASKS)
def test_every_test_prompt_fits_the_configured_lengths(data_dir, vocab, name):
    info = get_task_info(name)
    lengths = config.feature_lengths(info.kind)
    count = lambda text: len(vocab.encode(text))  # noqa: E731
    rendered = info.render("test", count)
    assert rendered.dropped == 0
    n_shots = []
    for example in rendered.examples:
        assert count(example["inputs"]) <= lengths["inputs"]
        assert count(example["targets"]) + 1 <= lengths["targets"]
        n_shots.append(example["inputs"].count(prompts.STOP) - 1)
    full = len(tasks.exemplars.exemplars_for(name.rsplit("_", 1)[0]))
    print(f"{name}: exemplars kept {np.bincount(n_shots, minlength=full + 1).tolist()}")
    # Even with this small (1024-id) tokenizer, which spends ~3x BLOOM's tokens on a text, every
    # prompt keeps most of its exemplars; outside AQuA nearly all keep every one.
    assert min(n_shots) >= full // 2
    if not name.startswith("aqua"):
        assert np.mean(np.asarray(n_shots) == full) > 0.9


def _as_text(vocab, ids):
    return vocab.decode([int(i) for i in ids])


def test_seqio_dataset_through_the_decoder_feature_converter(data_dir, vocab):
    task = seqio.get_mixture_or_task("svamp_code")
    lengths = config.feature_lengths("few_shot")
    ds = task.get_dataset(lengths, split="test", shuffle=False)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 300
    first = examples[0]
    assert _as_text(vocab, first["inputs"]) == first["inputs_pretokenized"].decode()
    assert first["targets"][-1] == vocab.eos_id
    assert first["problem_id"].decode() == "svamp/chal-1" and first["method"].decode() == "code"
    converted = seqio.DecoderFeatureConverter(pack=False)(ds, lengths)
    batch = next(converted.as_numpy_iterator())
    total = lengths["inputs"] + lengths["targets"]
    assert batch["decoder_target_tokens"].shape == (total,)
    n_inputs, n_targets = len(first["inputs"]), len(first["targets"])
    # Prefix-LM: the loss covers the completion only.
    assert batch["decoder_loss_weights"][:n_inputs].sum() == 0
    assert batch["decoder_loss_weights"][n_inputs:n_inputs + n_targets].sum() == n_targets


def test_overlong_examples_are_dropped_never_truncated(vocab):
    task = seqio.get_mixture_or_task("synthetic_code_to_text")
    full = list(task.get_dataset(None, split="test", shuffle=False).as_numpy_iterator())
    limit = {"inputs": 70, "targets": 30}
    kept = list(task.get_dataset(limit, split="test", shuffle=False).as_numpy_iterator())
    fits = [e for e in full if len(e["inputs"]) <= 70 and len(e["targets"]) <= 30]
    assert 0 < len(kept) == len(fits) < len(full)
    for example in kept:
        assert _as_text(vocab, example["targets"]) == example["targets_pretokenized"].decode()
        assert _as_text(vocab, example["inputs"]) == example["inputs_pretokenized"].decode()


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _record(method, prompt, completion, correct=True, dataset="synthetic_change", gold="8"):
    return {"problem_id": "p", "dataset": dataset, "method": method, "sample_index": 0, "round": 1,
            "prompt": prompt, "completion": completion, "gold": gold, "seed": 0, "answer": gold,
            "correct": correct, "status": "ok", "detail": "", "elapsed_ms": 1}


def test_training_tasks_and_gin_mixture_over_run_time_files(tmp_path, clean_gin, vocab):
    q = "Question: Ana has 20 dollars and buys 3 pens for 4 dollars each. How many dollars does Ana have left?"
    text = _write(tmp_path / "train" / "text" / "part-00000-of-00001.jsonl", [
        _record("text", q + "\nSolution:", " 3 * 4 = 12. 20 - 12 = 8. The answer is 8."),
        _record("text", q + "\nSolution:", " 20 - 3 = 17. The answer is 17.", correct=False)])
    _write(tmp_path / "train" / "code" / "part-00000-of-00001.jsonl", [
        _record("code", q + "\nProgram:\n", "def solution():\n    return 20 - 3 * 4\n")])
    gin.bind_parameter("tasks.training_files.files", {"text": [str(text)], "code": [str(tmp_path / "train/code/*.jsonl")]})
    gin.bind_parameter("tasks.mixture_rates.rates", {"mmst_train_text": 1.0, "mmst_train_code": 0.0})
    lengths = {"inputs": 128, "targets": 64}
    text_examples = list(seqio.get_mixture_or_task("mmst_train_text").get_dataset(
        lengths, split="train", shuffle=False).as_numpy_iterator())
    assert [e["targets_pretokenized"].decode() for e in text_examples] == [" 3 * 4 = 12. 20 - 12 = 8. The answer is 8."]
    mixture = seqio.get_mixture_or_task("mmst_train")
    assert mixture.get_rate(seqio.get_mixture_or_task("mmst_train_code")) == 0.0
    mixed = list(mixture.get_dataset(lengths, split="train", shuffle=False).take(6).as_numpy_iterator())
    assert len(mixed) == 6
    assert all(_as_text(vocab, e["targets"]).startswith(" 3 * 4") for e in mixed)  # code has rate 0


def test_gin_registered_mixtures_and_rate_errors(tmp_path, clean_gin):
    from tasks import training

    gin.bind_parameter("tasks.mixtures.mixtures", {"smoke_mix": {"synthetic_bootstrap": 3.0, "synthetic_text": 1.0}})
    assert training.register_mixtures_from_gin() == ["smoke_mix"]
    mix = seqio.get_mixture_or_task("smoke_mix")
    assert mix.get_rate(seqio.get_mixture_or_task("synthetic_bootstrap")) == 3.0
    gin.bind_parameter("tasks.mixtures.mixtures", {"bad": {"no_such_task": 1.0}})
    with pytest.raises(config.TaskConfigError, match="unknown task 'no_such_task'"):
        training.register_mixtures_from_gin()
    with pytest.raises(config.TaskConfigError, match="number >= 0"):
        training.mixture_rates({"mmst_train_text": -1})


def test_training_task_without_files_says_which_binding_to_set(clean_gin):
    with pytest.raises(config.TaskConfigError, match="tasks.training_files.files"):
        get_task_info("mmst_train_code").render("train", None)


def test_malformed_record_line_names_file_and_line_or_is_skipped_and_counted(tmp_path):
    good = _record("text", "Question: x?\nSolution:", " The answer is 8.")
    path = _write(tmp_path / "r.jsonl", [good, "{not json", {**good, "method": "maths"}, good])
    with pytest.raises(records.RecordError, match=r"r\.jsonl:2: not valid JSON"):
        records.read_records([str(path)])
    result = records.read_records([str(path)], skip_bad=True)
    assert len(result.records) == 2
    assert [(line, reason.split(" ")[0]) for _, line, reason in result.skipped] == [(2, "not"), (3, "method")]
    with pytest.raises(records.RecordError, match="no record files match"):
        records.read_records([str(tmp_path / "missing-*.jsonl")])


def test_translation_task_rewrites_verified_records_of_the_source_method(tmp_path, clean_gin, data_dir):
    solve = get_task_info("gsm8k_text").render("train", None).examples[0]
    verified = _write(tmp_path / "verified" / "text" / "part-00000-of-00001.jsonl", [
        _record("text", solve["inputs"], " Natalia sold 48 / 2 = 24 clips in May and 48 + 24 = 72 in all. "
                "The answer is 72.", dataset="gsm8k", gold="72"),
        _record("text", solve["inputs"], " The answer is 70.", correct=False, dataset="gsm8k", gold="72"),
        _record("code", solve["inputs"], "def solution():\n    return 72\n", dataset="gsm8k", gold="72")])
    gin.bind_parameter("tasks.translation_sources.files", {"text": [str(verified)]})
    rendered = get_task_info("mmst_translate_text_to_code").render("train", None)
    assert len(rendered.examples) == 1
    example = rendered.examples[0]
    assert example["method"] == "code" and example["gold"] == "72" and example["dataset"] == "gsm8k"
    blocks = example["inputs"].split(prompts.STOP)
    assert blocks[0] == prompts.INSTRUCTIONS["text_to_code"] and len(blocks) == 10
    assert blocks[-1] == (
        "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
        "May. How many clips did Natalia sell altogether in April and May?\nSolution: Natalia sold 48 / 2 = 24 "
        "clips in May and 48 + 24 = 72 in all. The answer is 72.\nProgram:\n")
    ds = seqio.get_mixture_or_task("mmst_translate_text_to_code").get_dataset(
        config.feature_lengths("translation"), split="train", shuffle=False)
    assert len(list(ds.as_numpy_iterator())) == 1


def test_deferred_vocabulary_needs_a_configured_tokenizer(monkeypatch, clean_gin):
    monkeypatch.delenv(config.TOKENIZER_ENV)
    with pytest.raises(config.TaskConfigError, match="tasks.tokenizer.path"):
        DeferredVocabulary().encode("hello")


def test_mmst_tasks_lists_and_shows(capsys, data_dir):
    assert command.main([]) == 0
    listing = capsys.readouterr().out
    for name in ("gsm8k_text", "aqua_code", "commonsenseqa_text", "mmst_train", "synthetic_bootstrap"):
        assert f"\n{name} " in "\n" + listing
    assert command.main(["--show", "mawps_singleop_code", "--index", "1"]) == 0
    shown = capsys.readouterr().out
    assert "# problem_id: mawps_singleop/8" in shown and "# tokens: inputs" in shown
    assert shown.rstrip().endswith("=== targets ===\n7")


@pytest.mark.parametrize("argv, message", [
    (["--show", "gsm8k_txt"], "unknown task 'gsm8k_txt'; did you mean gsm8k_text"),
    (["--show", "gsm8k_text", "--split", "dev"], "has splits train, test, not 'dev'"),
    (["--show", "aqua_text", "--index", "999"], "has 200 examples"),
    (["--show", "mmst_translate_code_to_text"], "tasks.translation_sources.files"),
])
def test_mmst_tasks_bad_input_is_a_clear_error(capsys, clean_gin, data_dir, argv, message):
    assert command.main(argv) == 2
    assert message in capsys.readouterr().err


def test_mmst_tasks_with_a_missing_data_directory(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "gone"))
    assert command.main(["--show", "gsm8k_code"]) == 2
    assert "gone" in capsys.readouterr().err and os.environ[config.DATA_DIR_ENV].endswith("gone")
