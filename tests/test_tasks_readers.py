"""Readers over the whole published files: counts, canonical golds, and clear errors on bad input."""

import json
import re
import shutil

import pytest

from tasks import answers, config, readers

CANONICAL_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d*[1-9])?$")

# (reader, published count from the data README)
PUBLISHED = {
    "gsm8k/train": (lambda d: readers.read_gsm8k(d, "train"), 7473),
    "gsm8k/test": (lambda d: readers.read_gsm8k(d, "test"), 1319),
    "svamp": (readers.read_svamp, 1000),
    "mawps/addsub": (lambda d: readers.read_mawps(d, "addsub"), 395),
    "mawps/multiarith": (lambda d: readers.read_mawps(d, "multiarith"), 600),
    "mawps/singleeq": (lambda d: readers.read_mawps(d, "singleeq"), 508),
    "mawps/singleop": (lambda d: readers.read_mawps(d, "singleop"), 562),
    "asdiv": (readers.read_asdiv, 2096),
    "aqua": (readers.read_aqua, 254),
    "strategyqa": (readers.read_strategyqa, 2290),
    "commonsenseqa/train": (lambda d: readers.read_commonsenseqa(d, "train"), 9741),
    "commonsenseqa/dev": (lambda d: readers.read_commonsenseqa(d, "dev"), 1221),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_whole_file_parses_to_the_published_count_with_canonical_golds(data_dir, name):
    read, count = PUBLISHED[name]
    result = read(data_dir)
    assert result.skipped == []
    assert len(result.problems) == count
    assert len({p.id for p in result.problems}) == count
    for p in result.problems:
        assert p.question and p.question == p.question.strip()
        if p.dataset == "strategyqa":
            assert p.gold in ("yes", "no")
        elif p.choices:
            labels = [label for label, _ in p.choices]
            assert labels == list("ABCDE") and p.gold in labels
        else:
            assert CANONICAL_NUMBER.match(p.gold), (p.id, p.gold)
            assert float(p.gold) == pytest.approx(float(p.gold_raw.replace(",", "")))


def test_gsm8k_gold_comes_from_the_hash_line_without_separators(data_dir):
    problems = readers.read_gsm8k(data_dir, "train").problems
    assert problems[0].gold == "72" and "<<" not in problems[0].reference
    with_commas = [p for p in problems if "," in p.gold_raw]
    assert with_commas and all("," not in p.gold for p in with_commas)
    negatives = [p for p in problems if p.gold.startswith("-")]
    assert all(p.gold == p.gold_raw for p in negatives)


@pytest.mark.parametrize("raw, canonical", [
    ("1,450,000", "1450000"), (43.0, "43"), ("0.50", "0.5"), (-7, "-7"), (0.6666666667, "0.6666666667"),
    ("$ 12", "12"), (" 3.10 ", "3.1"), (-0.0, "0")])
def test_canonical_number(raw, canonical):
    assert answers.canonical_number(raw) == canonical


@pytest.mark.parametrize("raw", ["twelve", "1/2", "", float("nan"), True, "12 apples"])
def test_canonical_number_rejects_what_is_not_one_number(raw):
    with pytest.raises(answers.AnswerError):
        answers.canonical_number(raw)


def test_choice_and_yes_no_forms():
    assert answers.canonical_choice("(c)") == "C"
    assert answers.canonical_yes_no("Yes.") == "yes"
    with pytest.raises(answers.AnswerError):
        answers.canonical_choice("F")
    with pytest.raises(answers.AnswerError):
        answers.canonical_yes_no("maybe")


def test_missing_data_directory_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(config.TaskConfigError, match="nowhere.*does not exist"):
        config.data_dir()
    monkeypatch.delenv(config.DATA_DIR_ENV)
    with pytest.raises(config.TaskConfigError, match="MMST_DATA_DIR"):
        config.data_dir()


def test_missing_dataset_file_names_the_file_and_directory(tmp_path):
    with pytest.raises(readers.DatasetError, match="gsm8k/test.jsonl not found in data directory"):
        readers.read_gsm8k(tmp_path, "test")


def _copy_with_line_replaced(data_dir, tmp_path, relative, line_number, new_line):
    (tmp_path / relative).parent.mkdir(parents=True)
    lines = (data_dir / relative).read_text(encoding="utf-8").splitlines()
    lines[line_number - 1] = new_line
    (tmp_path / relative).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_malformed_jsonl_line_names_file_and_line_or_is_skipped_and_counted(data_dir, tmp_path):
    _copy_with_line_replaced(data_dir, tmp_path, "gsm8k/test.jsonl", 7, '{"question": "broken"')
    with pytest.raises(readers.DatasetError, match=r"gsm8k/test\.jsonl:7: not valid JSON"):
        readers.read_gsm8k(tmp_path, "test")
    result = readers.read_gsm8k(tmp_path, "test", skip_bad=True)
    assert len(result.problems) == 1318
    assert [(b.line, b.reason.split(" (")[0]) for b in result.skipped] == [(7, "not valid JSON")]


def test_record_without_a_usable_gold_is_reported_with_its_line(data_dir, tmp_path):
    _copy_with_line_replaced(data_dir, tmp_path, "asdiv/asdiv.jsonl", 3, json.dumps({"input": "x?", "target": "n/a"}))
    with pytest.raises(readers.DatasetError, match=r"asdiv\.jsonl:3: unexpected record .*not a number"):
        readers.read_asdiv(tmp_path)
    assert len(readers.read_asdiv(tmp_path, skip_bad=True).skipped) == 1


def test_bad_record_in_one_document_json_names_its_index(data_dir, tmp_path):
    (tmp_path / "svamp").mkdir()
    items = json.loads((data_dir / "svamp" / "SVAMP.json").read_text())
    del items[4]["Answer"]
    (tmp_path / "svamp" / "SVAMP.json").write_text(json.dumps(items))
    with pytest.raises(readers.DatasetError, match=r"SVAMP\.json:5: unexpected record \(KeyError"):
        readers.read_svamp(tmp_path)
    result = readers.read_svamp(tmp_path, skip_bad=True)
    assert len(result.problems) == 999 and result.skipped[0].line == 5


def test_truncated_json_document_names_the_line(data_dir, tmp_path):
    (tmp_path / "strategyqa").mkdir()
    text = (data_dir / "strategyqa" / "task.json").read_text()
    (tmp_path / "strategyqa" / "task.json").write_text(text[: len(text) // 2])
    with pytest.raises(readers.DatasetError, match=r"task\.json:\d+: not valid JSON"):
        readers.read_strategyqa(tmp_path)


def test_unknown_split_or_subset_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match="splits 'train' and 'test'"):
        readers.read_gsm8k(data_dir, "dev")
    with pytest.raises(ValueError, match="MAWPS subsets"):
        readers.read_mawps(data_dir, "all")


def test_data_dir_layout_copy_reads_like_the_original(data_dir, tmp_path):
    shutil.copytree(data_dir / "aqua", tmp_path / "aqua")
    assert readers.read_aqua(tmp_path).problems == readers.read_aqua(data_dir).problems
