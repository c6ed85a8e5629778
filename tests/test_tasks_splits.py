"""Splits: published where published, seeded elsewhere, and no test problem trained on."""

import pytest

from tasks import readers, splits


@pytest.fixture(scope="module")
def all_splits(data_dir):
    return splits.cached_splits(data_dir)


def test_published_splits_are_kept(all_splits):
    assert len(all_splits.get("gsm8k", "test")) == 1319
    assert {p.published_split for p in all_splits.get("gsm8k", "train")} == {"train"}
    assert len(all_splits.get("commonsenseqa", "test")) == 1221
    assert {p.published_split for p in all_splits.get("commonsenseqa", "test")} == {"dev"}


@pytest.mark.parametrize("dataset, total, n_test", [
    ("svamp", 1000, 300), ("mawps_addsub", 395, 118), ("mawps_multiarith", 600, 180),
    ("mawps_singleeq", 508, 152), ("mawps_singleop", 562, 169), ("asdiv", 2096, 629), ("aqua", 254, 200),
    ("strategyqa", 2290, 2000)])
def test_seeded_splits_partition_the_file(data_dir, all_splits, dataset, total, n_test):
    raw = splits.raw_splits(data_dir, dataset)
    assert len(raw["test"]) == n_test and len(raw["train"]) == total - n_test
    assert not {p.id for p in raw["train"]} & {p.id for p in raw["test"]}
    assert all_splits.get(dataset, "test") == raw["test"]
    train_ids = {p.id for p in all_splits.get(dataset, "train")}
    assert train_ids <= {p.id for p in raw["train"]}
    assert len(raw["train"]) - len(train_ids) == all_splits.removed[dataset]


def test_seeded_split_is_reproducible_and_depends_on_the_seed(data_dir):
    problems = readers.read_svamp(data_dir).problems
    first = splits.seeded_split(problems, "svamp", 300)
    assert splits.seeded_split(problems, "svamp", 300) == first
    other = splits.seeded_split(problems, "svamp", 300, seed=splits.SPLIT_SEED + 1)
    assert {p.id for p in other["test"]} != {p.id for p in first["test"]}
    # Documented order: test problems keep file order.
    assert [p.id for p in first["test"]] == [p.id for p in problems if p in first["test"]]


def test_no_training_problem_duplicates_any_test_problem(all_splits):
    tests = [p for name in splits.DATASETS for p in all_splits.get(name, "test")]
    index = splits.DuplicateIndex([p.question for p in tests])
    exact = {splits.fingerprint(p.question) for p in tests}
    for name in splits.DATASETS:
        for p in all_splits.get(name, "train"):
            assert splits.fingerprint(p.question) not in exact, p.id
            assert not index.contains(p.question), p.id


def test_dedup_removes_cross_dataset_copies(data_dir, all_splits):
    # AddSub and SingleEq publish the same seashell problem with slightly different wording.
    addsub = readers.read_mawps(data_dir, "addsub").problems[0]
    singleeq = readers.read_mawps(data_dir, "singleeq").problems[0]
    assert "70 seashells" in addsub.question and "70 seashells" in singleeq.question
    assert addsub.question != singleeq.question
    assert splits.DuplicateIndex([addsub.question]).contains(singleeq.question)
    in_test = {p.id for name in splits.DATASETS for p in all_splits.get(name, "test")}
    in_train = {p.id for name in splits.DATASETS for p in all_splits.get(name, "train")}
    if addsub.id in in_test or singleeq.id in in_test:
        assert addsub.id not in in_train and singleeq.id not in in_train
    assert sum(all_splits.removed.values()) > 0
    assert all_splits.removed["gsm8k"] == 0  # GSM8K shares no problems with the others


def test_near_duplicate_rules():
    index = splits.DuplicateIndex(["Tom has seven apples and eats 2. How many apples are left?"])
    assert index.contains("tom has 7 apples and eats 2 . how many apples are left ?")  # case, number words
    assert index.contains("Tom has 7.0 apples and eats 2. How many apples are left now?")  # Jaccard
    assert not index.contains("Tom has 8 apples and eats 2. How many apples are left?")  # other numbers
    assert not index.contains("Sue buys 7 pens and 2 books. How much does she pay?")  # same numbers only


def test_unknown_dataset_or_split_is_a_clear_error(all_splits):
    with pytest.raises(KeyError, match="unknown dataset 'mathqa'"):
        all_splits.get("mathqa", "test")
    with pytest.raises(KeyError, match="gsm8k has splits"):
        all_splits.get("gsm8k", "validation")
