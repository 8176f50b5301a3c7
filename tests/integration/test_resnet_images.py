"""ResNet-18 on generated shapes, 2 Ray Train workers, through both data paths:

- folder + DataLoader (ShardSampler), and
- Parquet shards + Ray Data (repartitioned into small blocks, then streaming_split(equal=False)
  via ray_datasets / DataConfig),

each reaching >= 90% validation accuracy, and each worker's per-epoch sample ids (written by
`train.record_samples`) covering every readable training image exactly once. One truncated
image sits in the training folder: the folder path must skip and count it every epoch; the
packer must leave it out of the shards and list it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.data.images import scan_folder
from orchestrator.data.shapes import make_shapes
from orchestrator.data.shards import pack_folder
from orchestrator.launch import launch
from orchestrator.plan import plan
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
# 151 images a class x 12 epochs reached only 0.775 (it overfits); 400 a class x 10 epochs
# (50 steps of 16 images per worker an epoch) reached 0.99 (folder) and 0.97 (Parquet), and
# 0.91 / 0.92 by epochs 5 / 7 of those 10. Folder path, cosine over N epochs (2026-11-26):
# N=8 0.9875, N=6 0.900 (too close), N=5 0.844; 7 keeps a margin at one epoch (~10 s) less.
EPOCHS = 7
PARQUET_EPOCHS = 10
BAD = "square/square_00003.png"
# 4 classes x 401 = 1,604 training images (1,603 readable): 2 workers split them unevenly.
COMMON = [
    "train.arch=resnet18",
    f"train.epochs={EPOCHS}",
    "train.batch_size=16",
    "train.lr=2e-3",
    "train.lr_schedule=cosine",
    "train.warmup_steps=10",
    "train.record_samples=true",
    "train.channels_last=false",
    "train.log_every=10",
    "data.image_size=32",
    "data.augment={horizontal_flip: true}",
    "data.loader_workers=1",
    "data.on_bad=skip",
    "resources.workers=2",
    "checkpoint.every_steps=100000",
    "seed=0",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_shapes(
        tmp_path_factory.mktemp("imgs") / "shapes", per_class=401, val_per_class=40, size=32
    )
    bad = root / "train" / BAD
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    report = pack_folder(root / "train", root / "shards" / "train", rows_per_shard=100)
    pack_folder(root / "val", root / "shards" / "val", rows_per_shard=40)
    idx = scan_folder(root / "train")
    readable = sorted(s.index for s in idx.samples if s.rel != BAD)
    return {
        "root": root,
        "report": report,
        "readable": readable,
        "bad_index": next(s.index for s in idx.samples if s.rel == BAD),
    }


def _run(tmp_path_factory, name, extra):
    runs = tmp_path_factory.mktemp(f"runs-{name}")
    spec = load_spec(
        ROOT / "jobs/resnet_images.yaml", [*COMMON, f"storage_path={runs}", f"name={name}", *extra]
    )
    summary = launch(plan(spec))
    assert summary["status"] == "SUCCEEDED", summary["error"]
    return summary


@pytest.fixture(scope="module")
def folder_run(ray_local, dataset, tmp_path_factory):
    root = dataset["root"]
    return _run(
        tmp_path_factory,
        "folder",
        ["data.format=folder", f"data.path={root / 'train'}", f"data.val_path={root / 'val'}"],
    )


@pytest.fixture(scope="module")
def parquet_run(ray_local, dataset, tmp_path_factory):
    root = dataset["root"]
    return _run(
        tmp_path_factory,
        "parquet",
        [
            # 10 epochs: this path varies run to run (Ray Data's split is timing-dependent).
            # At 8 epochs a 2,048-row buffer gave 0.975, 0.950, 0.963 and then 0.881 in a
            # fresh-clone run; 512 rows 0.963; 128 rows 0.925 and 0.900 (docs/benchmarks.md).
            f"train.epochs={PARQUET_EPOCHS}",
            "data.format=parquet",
            f"data.path={root / 'shards/train'}",
            f"data.val_path={root / 'shards/val'}",
            "data.shuffle_buffer=512",
        ],
    )


def _seen(summary) -> dict[int, dict[int, list[int]]]:
    out: dict[int, dict[int, list[int]]] = {}
    for f in sorted((Path(summary["run_dir"]) / "samples").glob("train-epoch*-rank*.json")):
        epoch = int(f.stem.split("epoch")[1].split("-")[0])
        rank = int(f.stem.split("rank")[1])
        out.setdefault(epoch, {})[rank] = json.loads(f.read_text())
    return out


def _assert_exactly_once(summary, expected: list[int], epochs: int = EPOCHS):
    seen = _seen(summary)
    assert sorted(seen) == list(range(epochs)), f"epochs recorded: {sorted(seen)}"
    for epoch, ranks in seen.items():
        assert sorted(ranks) == [0, 1], f"epoch {epoch}: ranks {sorted(ranks)}"
        # Each worker gets a fair share (the Parquet path once gave one worker all 1,603 rows:
        # Ray Data read the 17 small shards as a single block; ray_image_dataset now cuts it).
        sizes = [len(ranks[r]) for r in sorted(ranks)]
        assert min(sizes) >= 0.4 * sum(sizes), f"epoch {epoch}: lopsided shares {sizes}"
        both = ranks[0] + ranks[1]
        dupes = len(both) - len(set(both))
        assert dupes == 0, f"epoch {epoch}: {dupes} image(s) seen twice"
        missing = set(expected) - set(both)
        assert not missing, f"epoch {epoch}: {len(missing)} image(s) never seen"
        assert sorted(both) == expected
    # shuffled per epoch: the ids' order differs between epochs
    assert seen[0][0] + seen[0][1] != seen[1][0] + seen[1][1]


def test_folder_path_reaches_90_percent(folder_run):
    m = folder_run["metrics"]
    assert m["accuracy"] >= 0.90, m
    assert m["bad_samples"] == 1, "the truncated image is skipped and counted"


def test_folder_path_sees_each_image_exactly_once_per_epoch(folder_run, dataset):
    _assert_exactly_once(folder_run, dataset["readable"])


def test_pack_left_out_and_listed_the_bad_image(dataset):
    rep = dataset["report"]
    assert rep.rows == len(dataset["readable"]) and [Path(f).name for f, _ in rep.bad] == [
        "square_00003.png"
    ]


def test_parquet_ray_data_path_reaches_90_percent(parquet_run):
    m = parquet_run["metrics"]
    assert m["accuracy"] >= 0.90, m
    assert m["bad_samples"] == 0


def test_parquet_ray_data_path_sees_each_row_exactly_once_per_epoch(parquet_run, dataset):
    _assert_exactly_once(parquet_run, dataset["readable"], epochs=PARQUET_EPOCHS)
    rows = [
        json.loads(line)
        for line in (Path(parquet_run["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    ]
    val = [r["val_samples"] for r in rows if "val_samples" in r]
    assert val and all(v == 160 for v in val), "each validation row counted once"
