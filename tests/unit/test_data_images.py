"""orchestrator.data.images: folders, bad files, the sampler and the hold-out split."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.data.images import (
    BadImageError,
    DataError,
    ImageFolderDataset,
    ShardSampler,
    decode_image,
    folder_splits,
    scan_folder,
)
from tests.unit.data_fixtures import image_args, small_shapes, with_truncated_image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return small_shapes(tmp_path_factory.mktemp("shapes") / "s")


@pytest.fixture
def folder_with_bad(shapes, tmp_path) -> Path:
    return with_truncated_image(shapes, tmp_path / "f")


def test_empty_class_folder_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "b" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"/b: empty class folder"):
        scan_folder(tmp_path)
    with pytest.raises(DataError, match="no class folders"):
        scan_folder(tmp_path / "a")
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(tmp_path / "missing")


def test_truncated_and_garbage_images_are_named(shapes, tmp_path):
    good = (shapes / "train/circle/circle_00000.png").read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good[: len(good) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    for p in (trunc, junk):
        with pytest.raises(BadImageError) as err:
            decode_image(str(p))
        assert str(p) in str(err.value)
    assert decode_image(good).size == (16, 16)


def test_dataset_skips_or_fails_on_bad_file(folder_with_bad, capsys):
    idx = scan_folder(folder_with_bad)
    pos = next(i for i, s in enumerate(idx.samples) if s.rel == "square/square_00002.png")
    ds = ImageFolderDataset(idx.samples, image_args(on_bad="skip"), train=True)
    item = ds[(pos, 0)]
    assert item["weight"] == 0.0 and item["bad"] == 1
    assert "square_00002.png" in capsys.readouterr().err  # named, not silent
    assert ds[(0, 0)]["weight"] == 1.0
    strict = ImageFolderDataset(idx.samples, image_args(on_bad="fail"), train=True)
    with pytest.raises(BadImageError, match="square_00002.png"):
        strict[(pos, 0)]


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (1, 2), (100, 4)])
def test_shard_sampler_covers_each_position_once(n, world):
    for epoch in (0, 1):
        parts = []
        for rank in range(world):
            s = ShardSampler(n, rank, world, seed=3)
            s.set_epoch(epoch)
            keys = list(s)
            assert all(e == epoch for _, e in keys) and len(keys) == len(s)
            parts += [p for p, _ in keys]
        assert sorted(parts) == list(range(n))
    a, b = ShardSampler(50, 0, 2, seed=1), ShardSampler(50, 0, 2, seed=1)
    b.set_epoch(1)
    assert a.positions() != b.positions()  # reshuffled per epoch


def test_holdout_split_is_stable(shapes):
    d = image_args(path=str(shapes / "train"), val_fraction=0.3)
    _, tr, va = folder_splits(d, seed=0)
    _, tr2, va2 = folder_splits(d, seed=0)
    assert [s.index for s in va] == [s.index for s in va2] and va and tr
    assert not {s.index for s in tr} & {s.index for s in va}
