"""orchestrator.data, orchestrator.shapes and `orch data`: no Ray, each test well under a second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator import data
from orchestrator.data import (
    Augmenter,
    BadImageError,
    DataError,
    ImageDataArgs,
    ShardSampler,
    check_shards,
    pack_folder,
    scan_folder,
)
from orchestrator.shapes import make_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "s"
    return make_shapes(
        root, per_class=6, val_per_class=2, size=16, classes=["circle", "square", "cross"]
    )


def _args(**kw) -> ImageDataArgs:
    return ImageDataArgs.model_validate({"image_size": 16, **kw})


# --- generator ------------------------------------------------------------------------------


def test_make_shapes_layout_and_determinism(shapes, tmp_path):
    idx = scan_folder(shapes / "train")
    assert idx.classes == ["circle", "cross", "square"]
    assert idx.counts() == {"circle": 6, "cross": 6, "square": 6}
    again = make_shapes(
        tmp_path / "t", per_class=6, val_per_class=2, size=16, classes=["circle", "square", "cross"]
    )
    a = (shapes / "train/circle/circle_00003.png").read_bytes()
    assert a == (again / "train/circle/circle_00003.png").read_bytes()
    other = make_shapes(
        tmp_path / "u",
        per_class=6,
        val_per_class=2,
        size=16,
        classes=["circle", "square", "cross"],
        seed=1,
    )
    assert a != (other / "train/circle/circle_00003.png").read_bytes()


def test_make_shapes_refuses_other_settings(shapes):
    assert (
        make_shapes(
            shapes, per_class=6, val_per_class=2, size=16, classes=["circle", "square", "cross"]
        )
        == shapes
    )  # reused as is
    with pytest.raises(FileExistsError, match="not made with these settings"):
        make_shapes(shapes, per_class=7, val_per_class=2, size=16)
    with pytest.raises(ValueError, match="unknown shape"):
        make_shapes(shapes.parent / "x", classes=["hexagon"])


# --- folders and bad files -----------------------------------------------------------------


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
            data.decode_image(str(p))
        assert str(p) in str(err.value)
    assert data.decode_image(good).size == (16, 16)


@pytest.fixture
def folder_with_bad(shapes, tmp_path) -> Path:
    import shutil

    root = tmp_path / "f"
    shutil.copytree(shapes / "train", root)
    bad = root / "square" / "square_00002.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    return root


def test_dataset_skips_or_fails_on_bad_file(folder_with_bad, capsys):
    idx = scan_folder(folder_with_bad)
    pos = next(i for i, s in enumerate(idx.samples) if s.rel == "square/square_00002.png")
    ds = data.ImageFolderDataset(idx.samples, _args(on_bad="skip"), train=True)
    item = ds[(pos, 0)]
    assert item["weight"] == 0.0 and item["bad"] == 1
    assert "square_00002.png" in capsys.readouterr().err  # named, not silent
    assert ds[(0, 0)]["weight"] == 1.0
    strict = data.ImageFolderDataset(idx.samples, _args(on_bad="fail"), train=True)
    with pytest.raises(BadImageError, match="square_00002.png"):
        strict[(pos, 0)]


# --- exactly once ----------------------------------------------------------------------------


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


class _Board:
    """Two workers as threads: all_reduce_sum waits for both and returns the sum."""

    def __init__(self, world: int):
        import threading

        self.world, self.vals = world, {}
        self.barrier = threading.Barrier(world)

    def sess(self, rank: int):
        board = self

        class S:
            def all_reduce_sum(self, values):
                board.vals[rank] = values
                board.barrier.wait()
                out = [sum(v) for v in zip(*board.vals.values(), strict=True)]
                board.barrier.wait()
                return out

        s = S()
        s.rank = rank
        return s


def test_synced_batches_pads_short_worker_with_zero_weight():
    import threading

    import torch

    def batches(sizes, start):
        i = start
        for n in sizes:
            yield {
                "label": torch.zeros(n, dtype=torch.int64),
                "weight": torch.ones(n),
                "index": torch.arange(i, i + n),
                "bad": torch.zeros(n, dtype=torch.int64),
            }
            i += n

    board = _Board(2)
    out: dict[int, list] = {}

    def run(rank, sizes, start):
        out[rank] = list(data.synced_batches(batches(sizes, start), board.sess(rank)))

    ts = [
        threading.Thread(target=run, args=(0, [4, 4, 4], 0)),
        threading.Thread(target=run, args=(1, [4, 3], 100)),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(out[0]) == len(out[1]) == 3  # lockstep: same number of steps
    assert [t for _, t in out[0]] == [8.0, 7.0, 4.0]  # real samples across both, per step
    pad, _ = out[1][2]
    assert pad.get("dummy") and float(pad["weight"].sum()) == 0.0 and pad["index"].numel() == 0
    seen = [int(i) for rank in (0, 1) for b, _ in out[rank] for i in b["index"]]
    assert sorted(seen) == list(range(12)) + list(range(100, 107))


def test_synced_batches_feeds_a_worker_with_no_data_an_empty_batch():
    import threading

    import torch

    def batches(sizes):
        for n in sizes:
            yield {"label": torch.zeros(n, dtype=torch.int64), "weight": torch.ones(n),
                   "index": torch.arange(n), "bad": torch.zeros(n, dtype=torch.int64)}

    board = _Board(2)
    out: dict[int, object] = {}

    def run(rank, sizes, empty):
        try:
            out[rank] = list(data.synced_batches(batches(sizes), board.sess(rank), empty))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[rank] = exc

    ts = [threading.Thread(target=run, args=(0, [4, 4], None)),
          threading.Thread(target=run, args=(1, [], lambda: data.empty_batch(8)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(out[0]) == len(out[1]) == 2 and [t for _, t in out[1]] == [4.0, 4.0]
    pad, _ = out[1][0]
    assert pad["image"].shape == (2, 3, 8, 8) and float(pad["weight"].sum()) == 0.0
    assert pad["index"].numel() == 0
    # without an `empty` factory the starved worker is a named error
    board = _Board(2)
    ts = [threading.Thread(target=run, args=(0, [4], None), daemon=True),
          threading.Thread(target=run, args=(1, [], None), daemon=True)]
    for t in ts:
        t.start()
    ts[1].join(10)
    board.barrier.abort()  # rank 0 waits on a step rank 1 will never take: release it
    ts[0].join(10)
    assert isinstance(out[1], data.DataError) and "no data at all" in str(out[1])


def test_merge_short_tail_folds_a_tiny_last_batch_into_the_one_before():
    import torch

    def batches(sizes):
        i = 0
        for n in sizes:
            yield {"label": torch.zeros(n, dtype=torch.int64), "index": torch.arange(i, i + n)}
            i += n

    sizes = lambda out: [len(b["label"]) for b in out]  # noqa: E731
    merged = list(data.merge_short_tail(batches([16, 16, 2]), 8))
    assert sizes(merged) == [16, 18]
    assert torch.equal(torch.cat([b["index"] for b in merged]), torch.arange(34))
    assert sizes(data.merge_short_tail(batches([16, 16, 8]), 8)) == [16, 16, 8]  # not short
    assert sizes(data.merge_short_tail(batches([3]), 8)) == [3]  # nothing to fold into
    assert sizes(data.merge_short_tail(batches([]), 8)) == []
    assert sizes(data.merge_short_tail(batches([16, 1]), 8)) == [17]


# --- augmentation -----------------------------------------------------------------------------


def test_augment_is_deterministic_per_seed_epoch_and_index():
    base = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    d = _args(
        resize=20,
        random_crop=True,
        augment={
            "rotation_range": 30,
            "width_shift_range": 0.2,
            "height_shift_range": 2,
            "shear_range": 10,
            "zoom_range": 0.2,
            "horizontal_flip": True,
            "fill_mode": "reflect",
        },
    )
    aug = Augmenter(d, train=True, seed=7)
    x = aug(base, index=3, epoch=1)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert np.array_equal(x, Augmenter(d, train=True, seed=7)(base, 3, 1))
    assert not np.array_equal(x, aug(base, 3, 2))  # another epoch
    assert not np.array_equal(x, Augmenter(d, train=True, seed=8)(base, 3, 1))  # another seed
    val = Augmenter(d, train=False, seed=7)
    assert np.array_equal(val(base, 3, 1), val(base, 3, 2))  # validation: no randomness


def test_augment_params_respect_ranges():
    d = _args(
        augment={
            "rotation_range": 10,
            "width_shift_range": 0.25,
            "zoom_range": [0.8, 0.9],
            "horizontal_flip": True,
        }
    )
    aug = Augmenter(d, train=True)
    ps = [aug.params(i, 0) for i in range(200)]
    assert max(abs(p["theta"]) for p in ps) <= np.radians(10) + 1e-9
    assert max(abs(p["tx"]) for p in ps) <= 0.25 * 16 and all(p["ty"] == 0 for p in ps)
    assert all(0.8 <= p["zx"] <= 0.9 for p in ps)
    flips = sum(p["hflip"] for p in ps)
    assert 60 < flips < 140 and not any(p["vflip"] for p in ps)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
def test_fill_modes_differ_where_the_image_moves_out(mode):
    base = np.zeros((16, 16, 3), np.uint8)
    base[:, :8] = 200  # left half bright
    d = _args(augment={"width_shift_range": 6, "fill_mode": mode, "cval": 50})
    aug = Augmenter(d, train=True)
    # find an index whose shift is large, then check the fill
    i = next(i for i in range(100) if abs(aug.params(i, 0)["tx"]) >= 5)
    tx = aug.params(i, 0)["tx"]
    out = aug.augment_uint8(base, i, 0)
    edge = out[:, -1, 0] if tx > 0 else out[:, 0, 0]  # the column filled from outside
    expected = {
        "constant": 50,
        "nearest": 0 if tx > 0 else 200,
        "wrap": 200 if tx > 0 else 0,
        "reflect": 0 if tx > 0 else 200,
    }[mode]
    assert int(np.median(edge)) == expected


def test_flip_exact():
    base = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    d = _args(augment={"horizontal_flip": True})
    aug = Augmenter(d, train=True)
    i = next(i for i in range(50) if aug.params(i, 0)["hflip"])
    assert np.array_equal(aug.augment_uint8(base, i, 0), base[:, ::-1])


def test_spec_errors_name_fields():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        ImageDataArgs.model_validate(
            {
                "augment": {"fill_mode": "mirror", "zoom_range": [1.2, 0.8]},
                "image_size": 64,
                "resize": 32,
                "on_bad": "ignore",
            }
        )
    text = str(err.value)
    for key in ("fill_mode", "zoom_range", "on_bad"):
        assert key in text
    rel = ImageDataArgs.model_validate({"path": "some/rel"})
    assert Path(rel.path).is_absolute()


# --- Parquet shards ---------------------------------------------------------------------------


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
    manifest = json.loads((tmp_path / "sh" / data.SHARDS_MANIFEST).read_text())
    assert manifest["bad"][0]["file"].endswith("square_00002.png")
    rows_ = list(data.iter_shard_rows(tmp_path / "sh"))
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
    d = _args(
        path=str(tmp_path / "sh"),
        val_fraction=0,
        augment={"rotation_range": 20, "horizontal_flip": True},
    )
    aug = Augmenter(d, train=True, seed=5)
    got = {}
    for rank in (0, 1):
        for b in data.local_shard_batches(d.path, d, aug, 4, 2, None, 5, rank, 2):
            for i, img in zip(b["index"].tolist(), b["image"], strict=True):
                assert i not in got
                got[i] = img.numpy()
    idx = scan_folder(shapes / "train")
    assert sorted(got) == [s.index for s in idx.samples]
    ds = data.ImageFolderDataset(idx.samples, d, train=True, seed=5)
    for pos in (0, 7, 17):
        assert np.array_equal(ds[(pos, 2)]["image"], got[idx.samples[pos].index])


def test_holdout_split_is_stable(shapes):
    d = _args(path=str(shapes / "train"), val_fraction=0.3)
    _, tr, va = data.folder_splits(d, seed=0)
    _, tr2, va2 = data.folder_splits(d, seed=0)
    assert [s.index for s in va] == [s.index for s in va2] and va and tr
    assert not {s.index for s in tr} & {s.index for s in va}


# --- looking at data ---------------------------------------------------------------------------


def test_summarize_and_grid(folder_with_bad, tmp_path):
    info = data.summarize(folder_with_bad, verify=True)
    assert info["rows"] == 18 and len(info["bad"]) == 1
    imgs, labels = data.sample_images(folder_with_bad, n=6, size=24)
    assert set(labels) == {"circle", "cross", "square"}
    g = data.image_grid(imgs, labels, cols=3)
    assert g.size[0] > 3 * 24


def test_cli_data_commands(shapes, folder_with_bad, tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    r = CliRunner()
    res = r.invoke(
        app, ["data", "pack", str(folder_with_bad), str(tmp_path / "sh"), "--rows-per-shard", "6"]
    )
    assert res.exit_code == 0, res.output
    assert "packed 17 images of 3 classes into 3 shard(s)" in res.output
    assert "skipped 1 bad image" in res.output and "square_00002.png" in res.output
    res = r.invoke(
        app, ["data", "inspect", str(tmp_path / "sh"), "--grid", str(tmp_path / "g.png")]
    )
    assert res.exit_code == 0, res.output
    assert "square" in res.output and (tmp_path / "g.png").stat().st_size > 100
    res = r.invoke(app, ["data", "inspect", str(folder_with_bad), "--verify"])
    assert res.exit_code == 1 and "square_00002.png" in res.output
    res = r.invoke(app, ["data", "inspect", str(tmp_path / "nowhere")])
    assert res.exit_code == 5 and "nowhere" in res.output
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: p\nworkload: resnet_images\ntrain: {{arch: resnet18}}\n"
        f"data: {{path: {shapes / 'train'}, image_size: 16, augment: {{rotation_range: 30}}}}\n"
    )
    res = r.invoke(
        app,
        [
            "data",
            "preview",
            str(spec),
            "data.augment.horizontal_flip=true",
            "--out",
            str(tmp_path / "p.png"),
            "--n",
            "3",
            "--variants",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(tmp_path / "p.png").size[0] > 3 * 16


def test_block_rows_gives_each_worker_many_small_blocks():
    # the shapes test: 1,603 rows, 2 workers -> 26 rows a block, 62 blocks
    assert data.block_rows(1603, 2) == 26
    assert -(-1603 // data.block_rows(1603, 2)) >= 2 * 32 - 2
    assert data.block_rows(10, 8) == 1  # fewer rows than blocks wanted: one row a block
    assert data.block_rows(10_000_000, 2) == 256  # capped for big datasets
    assert data.block_rows(0, 2) == 1


def test_pack_mixes_classes_in_each_shard_unless_told_to_keep_order(shapes, tmp_path):
    def labels_per_shard(out):
        shards, _c, _n = check_shards(out)
        return [{r["label"] for r in data.iter_shard_rows(f)} for f in shards]

    pack_folder(shapes / "train", tmp_path / "mixed", rows_per_shard=6)
    mixed = labels_per_shard(tmp_path / "mixed")
    assert len(mixed) == 3 and all(len(s) >= 2 for s in mixed), mixed
    pack_folder(shapes / "train", tmp_path / "again", rows_per_shard=6)
    same = [[r["index"] for r in data.iter_shard_rows(f)]
            for f in check_shards(tmp_path / "again")[0]]
    first = [[r["index"] for r in data.iter_shard_rows(f)]
             for f in check_shards(tmp_path / "mixed")[0]]
    assert same == first  # seeded: the same order every time
    pack_folder(shapes / "train", tmp_path / "sorted", rows_per_shard=6, shuffle_seed=None)
    assert labels_per_shard(tmp_path / "sorted") == [{0}, {1}, {2}]  # class by class


def test_cache_auto_keeps_decoded_rows_that_fit_a_quarter_of_the_object_store():
    d = _args(image_size=32)  # 32x32x3 bytes a row
    assert data.decoded_bytes(1000, d) == 1000 * 32 * 32 * 3
    store = 4 * data.decoded_bytes(1000, d)
    assert data.should_cache(1000, d, store) and not data.should_cache(1001, d, store)
    assert data.should_cache(10**9, _args(cache="true"), 1.0)
    assert not data.should_cache(1, _args(cache=False), 1e12)  # YAML false -> "false"
    with pytest.raises(ValueError, match="cache"):
        _args(cache="sometimes")
