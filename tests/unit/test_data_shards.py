"""orchestrator.data.shards: packing, checking and reading Parquet shards (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.data.augment import Augmenter
from orchestrator.data.images import BadImageError, DataError, ImageFolderDataset, scan_folder
from orchestrator.data.shards import (
    SHARDS_MANIFEST,
    block_rows,
    check_shards,
    decoded_bytes,
    iter_shard_rows,
    local_shard_batches,
    pack_folder,
    should_cache,
)
from tests.unit.data_fixtures import image_args, small_shapes, with_truncated_image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return small_shapes(tmp_path_factory.mktemp("shapes") / "s")


@pytest.fixture
def folder_with_bad(shapes, tmp_path) -> Path:
    return with_truncated_image(shapes, tmp_path / "f")


def test_pack_roundtrip_and_bad_file_listed(folder_with_bad, tmp_path):
    seen = []
    rep = pack_folder(
        folder_with_bad,
        tmp_path / "sh",
        rows_per_shard=5,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert rep.rows == 17 and len(rep.shards) == 4 and rep.bytes > 0
    assert len(rep.bad) == 1 and rep.bad[0][0].endswith("square_00002.png")
    assert seen[-1] == (18, 18)
    shards, classes, rows = check_shards(tmp_path / "sh")
    assert classes == ["circle", "cross", "square"] and rows == 17
    manifest = json.loads((tmp_path / "sh" / SHARDS_MANIFEST).read_text())
    assert manifest["bad"][0]["file"].endswith("square_00002.png")
    rows_ = list(iter_shard_rows(tmp_path / "sh"))
    idx = scan_folder(folder_with_bad)
    by_index = {s.index: s for s in idx.samples}
    for r in rows_:
        s = by_index[r["index"]]
        assert r["label"] == s.label and r["file"] == s.rel
        assert r["image"] == Path(s.file).read_bytes()  # the encoded bytes, untouched
    with pytest.raises(DataError, match="already holds"):
        pack_folder(folder_with_bad, tmp_path / "sh")
    with pytest.raises(BadImageError, match="square_00002.png"):
        pack_folder(folder_with_bad, tmp_path / "sh2", on_bad="fail")


def test_wrong_shard_schema_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "sh"
    d.mkdir()
    pq.write_table(pa.table({"image": [b"x"], "label": ["cat"]}), d / "shard-00000.parquet")
    with pytest.raises(
        DataError,
        match=r"shard-00000.parquet: wrong shard schema .*label: expected int64, found string",
    ):
        check_shards(d)
    (d / "shard-00000.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        check_shards(d)
    with pytest.raises(DataError, match="no .parquet shards"):
        check_shards(tmp_path)


def test_local_shard_batches_match_folder_path(shapes, tmp_path):
    """Same sample, seed and epoch -> the same tensor, whichever path read it."""
    pack_folder(shapes / "train", tmp_path / "sh", rows_per_shard=7)
    d = image_args(
        path=str(tmp_path / "sh"),
        val_fraction=0,
        augment={"rotation_range": 20, "horizontal_flip": True},
    )
    aug = Augmenter(d, train=True, seed=5)
    got = {}
    for rank in (0, 1):
        for b in local_shard_batches(d.path, d, aug, 4, 2, None, 5, rank, 2):
            for i, img in zip(b["index"].tolist(), b["image"], strict=True):
                assert i not in got
                got[i] = img.numpy()
    idx = scan_folder(shapes / "train")
    assert sorted(got) == [s.index for s in idx.samples]
    ds = ImageFolderDataset(idx.samples, d, train=True, seed=5)
    for pos in (0, 7, 17):
        assert np.array_equal(ds[(pos, 2)]["image"], got[idx.samples[pos].index])


def test_block_rows_gives_each_worker_many_small_blocks():
    # the shapes test: 1,603 rows, 2 workers -> 26 rows a block, 62 blocks
    assert block_rows(1603, 2) == 26
    assert -(-1603 // block_rows(1603, 2)) >= 2 * 32 - 2
    assert block_rows(10, 8) == 1  # fewer rows than blocks wanted: one row a block
    assert block_rows(10_000_000, 2) == 256  # capped for big datasets
    assert block_rows(0, 2) == 1


def test_pack_mixes_classes_in_each_shard_unless_told_to_keep_order(shapes, tmp_path):
    def labels_per_shard(out):
        shards, _c, _n = check_shards(out)
        return [{r["label"] for r in iter_shard_rows(f)} for f in shards]

    pack_folder(shapes / "train", tmp_path / "mixed", rows_per_shard=6)
    mixed = labels_per_shard(tmp_path / "mixed")
    assert len(mixed) == 3 and all(len(s) >= 2 for s in mixed), mixed
    pack_folder(shapes / "train", tmp_path / "again", rows_per_shard=6)
    same = [[r["index"] for r in iter_shard_rows(f)] for f in check_shards(tmp_path / "again")[0]]
    first = [[r["index"] for r in iter_shard_rows(f)] for f in check_shards(tmp_path / "mixed")[0]]
    assert same == first  # seeded: the same order every time
    pack_folder(shapes / "train", tmp_path / "sorted", rows_per_shard=6, shuffle_seed=None)
    assert labels_per_shard(tmp_path / "sorted") == [{0}, {1}, {2}]  # class by class


def test_cache_auto_keeps_decoded_rows_that_fit_a_quarter_of_the_object_store():
    d = image_args(image_size=32)  # 32x32x3 bytes a row
    assert decoded_bytes(1000, d) == 1000 * 32 * 32 * 3
    store = 4 * decoded_bytes(1000, d)
    assert should_cache(1000, d, store) and not should_cache(1001, d, store)
    assert should_cache(10**9, image_args(cache="true"), 1.0)
    assert not should_cache(1, image_args(cache=False), 1e12)  # YAML false -> "false"
    with pytest.raises(ValueError, match="cache"):
        image_args(cache="sometimes")


def test_ensure_default_data_makes_the_shapes_and_their_shards_once(tmp_path):
    from orchestrator.data.shards import ensure_default_data

    shapes = {"classes": ["circle", "bar"], "per_class": 3, "val_per_class": 1, "size": 8}
    d = image_args(format="parquet", cache_dir=str(tmp_path), shapes=shapes)
    got = ensure_default_data(d)
    assert Path(got.path).name == "train" and Path(got.val_path).parent.name == "shards"
    assert check_shards(got.path)[1:] == (["bar", "circle"], 6)
    assert ensure_default_data(d) == got  # made once, then reused
    folder = ensure_default_data(image_args(cache_dir=str(tmp_path), shapes=shapes))
    assert Path(folder.path) == Path(got.path).parent.parent / "train"
    assert ensure_default_data(got) is got  # a path given: nothing to do
