"""orchestrator.data.text: the number corpus and JSONL/CSV/Parquet pair files (no Ray, no torch)."""

from __future__ import annotations

import pytest

from orchestrator.data.text import (
    Pair,
    file_format,
    load_pairs,
    load_splits,
    number_corpus,
    split_pairs,
    write_pairs,
)
from orchestrator.errors import SpecError


def test_number_corpus_splits_are_disjoint_and_complete():
    s = number_corpus(max_number=499, n_val=50, n_test=100)
    keys = {name: {p.key for p in pairs} for name, pairs in s.items()}
    assert len(s["test"]) == 100 and len(s["val"]) == 50 and len(s["train"]) == 500 - 150
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    assert keys["train"] | keys["val"] | keys["test"] == set(range(500))


def test_number_corpus_is_fixed_by_its_seed():
    a = number_corpus(max_number=300, n_val=10, n_test=20, seed=0)
    b = number_corpus(max_number=300, n_val=10, n_test=20, seed=0)
    c = number_corpus(max_number=300, n_val=10, n_test=20, seed=1)
    assert a == b
    assert [p.key for p in a["test"]] != [p.key for p in c["test"]]


def test_number_corpus_words():
    s = number_corpus(max_number=400, n_val=1, n_test=1, n_train=None)
    by_key = {p.key: p for split in s.values() for p in split}
    assert by_key[342].source == "three hundred and forty-two"
    assert by_key[342].target == "trois cent quarante-deux"
    assert by_key[71].target == "soixante et onze"
    assert by_key[200].target == "deux cents"


def test_number_corpus_caps_training_and_rejects_impossible_sizes():
    assert len(number_corpus(max_number=99, n_val=5, n_test=5, n_train=20)["train"]) == 20
    with pytest.raises(SpecError) as e:
        number_corpus(max_number=99, n_val=50, n_test=50)
    assert "data.n_test" in e.value.paths


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_write_then_load_each_format_with_named_columns(tmp_path, suffix):
    pairs = [
        Pair("one", "un"),
        Pair("twenty-one", "vingt et un"),
        Pair('say "hi", ok', "dis, « salut »"),
    ]
    path = write_pairs(pairs, tmp_path / f"p.{suffix}", source_column="en", target_column="fr")
    back = load_pairs(path, source_column="en", target_column="fr")
    assert [(p.source, p.target) for p in back] == [(p.source, p.target) for p in pairs]


def test_missing_columns_name_the_field_and_list_the_columns(tmp_path):
    path = write_pairs(
        [Pair("one", "un")], tmp_path / "p.jsonl", source_column="en", target_column="fr"
    )
    with pytest.raises(SpecError) as e:
        load_pairs(path, source_column="english", target_column="french")
    assert set(e.value.paths) == {"data.source_column", "data.target_column"}
    assert "en, fr" in str(e.value)


def test_file_errors_are_spec_errors_naming_the_file(tmp_path):
    with pytest.raises(SpecError) as e:
        load_pairs(tmp_path / "nope.jsonl", field="data.val_path")
    assert e.value.paths == ["data.val_path"] and "nope.jsonl" in str(e.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a", "target": "b"}\nnot json\n')
    with pytest.raises(SpecError, match="line 2"):
        load_pairs(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("source,target\none,\n")
    with pytest.raises(SpecError, match="row 1: empty"):
        load_pairs(empty)
    with pytest.raises(SpecError, match="cannot tell the format"):
        file_format(tmp_path / "pairs.txt")
    assert file_format(tmp_path / "pairs.txt", "csv") == "csv"
    assert file_format(tmp_path / "x.parquet") == "parquet"


def test_split_pairs_and_load_splits_from_files(tmp_path):
    pairs = [Pair(f"s{i}", f"t{i}") for i in range(30)]
    cut = split_pairs(pairs, n_val=5, n_test=10, seed=3)
    assert [len(cut[k]) for k in ("train", "val", "test")] == [15, 5, 10]
    assert {p.source for k in cut for p in cut[k]} == {p.source for p in pairs}
    train = write_pairs(pairs, tmp_path / "train.csv")
    test = write_pairs(pairs[:4], tmp_path / "test.parquet")
    s = load_splits(path=str(train), test_path=str(test), n_val=6, n_test=999)
    assert len(s["test"]) == 4 and len(s["val"]) == 6 and len(s["train"]) == 24
    with pytest.raises(SpecError, match="data.path"):
        load_splits(val_path=str(test))
    with pytest.raises(SpecError, match="must be fewer"):
        load_splits(path=str(train), n_val=20, n_test=20)


def test_default_is_the_number_corpus():
    s = load_splits(n_val=5, n_test=5, max_number=50)
    assert len(s["train"]) == 41 and s["test"][0].key is not None
