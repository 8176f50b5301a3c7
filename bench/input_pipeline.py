"""Input pipeline and scaling, side by side in one run:

1. decode + augment images/s at 224 px, the batched augmentation (Augmenter.batch: one
   gather and one grid_sample per batch, each image with its own seeded draw) against the
   per-image scipy.ndimage path it replaced (kept here only, `_reference_augment`), on the
   same JPEG files, the same draws and one thread each (as in a DataLoader process); also
   the augmentation alone, and how far the two outputs differ (uint8 levels);
2. images/s of decode + augment (no model): image folder + torch DataLoader against Parquet
   shards + Ray Data (read_parquet -> map_batches(decode) -> iter_torch_batches(augment)),
   on the same generated images with the same augmentation;
3. ResNet-50 training samples/s through `orch run`'s launcher at 1 and 2 Ray Train workers.

    python bench/input_pipeline.py                                   # ~3-5 min on 2 cores
    python bench/input_pipeline.py --images 2000 --size 64 --train-steps 12 --train-size 32
    python bench/input_pipeline.py --only-augment                    # part 1 only (no Ray)
    python bench/input_pipeline.py --skip-train                      # parts 1 and 2

Prints tables and the ratios; results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AUGMENT = {
    "rotation_range": 15,
    "width_shift_range": 0.1,
    "height_shift_range": 0.1,
    "zoom_range": 0.1,
    "horizontal_flip": True,
    "fill_mode": "nearest",
}

_SCIPY_MODE = {
    "constant": "constant",
    "nearest": "nearest",
    "reflect": "reflect",
    "wrap": "grid-wrap",
}


def _reference_augment(aug, base, index: int, epoch: int):
    """The per-image path batched augmentation replaced (orchestrator/data/augment.py before
    issue 23), for this comparison only: the same draw (aug.params), then
    scipy.ndimage.affine_transform per channel, flips, and numpy normalisation -> CHW float32."""
    import numpy as np
    from scipy import ndimage

    from orchestrator.data.augment import affine_matrix

    h = w = aug.size
    p = aug.params(index, epoch)
    top, left = p["crop"]
    x = base[top : top + h, left : left + w]
    if aug.aug.is_affine():
        m = affine_matrix(h, w, p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"])
        x = np.stack(
            [
                ndimage.affine_transform(
                    x[..., c].astype(np.float32),
                    m[:2, :2],
                    offset=m[:2, 2],
                    order=1,
                    mode=_SCIPY_MODE[aug.aug.fill_mode],
                    cval=aug.aug.cval,
                )
                for c in range(x.shape[2])
            ],
            axis=-1,
        )
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if p["hflip"]:
        x = x[:, ::-1]
    if p["vflip"]:
        x = x[::-1]
    mean = np.array(aug.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
    std = np.array(aug.std, dtype=np.float32).reshape(3, 1, 1) * 255.0
    chw = np.transpose(np.ascontiguousarray(x), (2, 0, 1)).astype(np.float32)
    return (chw - mean) / std


def augment_compare(folder: Path, size: int, resize: int, batch: int, passes: int) -> dict:
    """Part 1: images/s of decode + augment, and of augment alone, new (batched) vs old
    (per image, scipy), one thread, alternating passes over the same files; medians."""
    import numpy as np
    import torch

    from orchestrator.data.args import ImageDataArgs
    from orchestrator.data.augment import Augmenter
    from orchestrator.data.images import base_array, decode_image, scan_folder

    torch.set_num_threads(1)  # as in a DataLoader worker process (and a 1-CPU Train worker)
    d = ImageDataArgs.model_validate(
        {"path": str(folder), "image_size": size, "resize": resize, "random_crop": True}
        | {"augment": AUGMENT}
    )
    aug = Augmenter(d, train=True, seed=0)
    samples = scan_folder(folder).samples
    chunks = [samples[i : i + batch] for i in range(0, len(samples), batch)]

    def decode(chunk):
        return [base_array(decode_image(s.file), d.base_size) for s in chunk]

    def old(chunk, bases, epoch):
        return torch.from_numpy(
            np.stack(
                [
                    _reference_augment(aug, b, s.index, epoch)
                    for s, b in zip(chunk, bases, strict=True)
                ]
            )
        )

    def new(chunk, bases, epoch):
        return aug.batch(np.stack(bases), [s.index for s in chunk], epoch)

    decoded = [decode(c) for c in chunks]  # warm the page cache; and for augment-only
    rates: dict[str, list[float]] = {k: [] for k in ("old", "new", "old_aug", "new_aug", "dec")}
    for epoch in range(passes):
        t = time.perf_counter()
        for c in chunks:
            decode(c)
        rates["dec"].append(len(samples) / (time.perf_counter() - t))
        for name, fn in (("old", old), ("new", new)):
            t = time.perf_counter()
            for c in chunks:
                fn(c, decode(c), epoch)
            rates[name].append(len(samples) / (time.perf_counter() - t))
            t = time.perf_counter()
            for c, bases in zip(chunks, decoded, strict=True):
                fn(c, bases, epoch)
            rates[f"{name}_aug"].append(len(samples) / (time.perf_counter() - t))
    # how far the outputs are apart, in uint8 levels (un-normalised), on every image of pass 0
    std = torch.tensor(aug.std).view(1, 3, 1, 1) * 255.0
    diffs = torch.cat(
        [
            ((old(c, b, 0) - new(c, b, 0)) * std).abs().round().flatten()
            for c, b in zip(chunks, decoded, strict=True)
        ]
    )
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "images": len(samples),
        "image_size": size,
        "resize": resize,
        "batch": batch,
        "passes": passes,
        "decode_img_s": med["dec"],
        "old_img_s": med["old"],
        "new_img_s": med["new"],
        "old_augment_img_s": med["old_aug"],
        "new_augment_img_s": med["new_aug"],
        "ratio": med["new"] / med["old"],
        "augment_ratio": med["new_aug"] / med["old_aug"],
        "max_level_diff": float(diffs.max()),
        "share_pixels_differing": float((diffs > 0).float().mean()),
    }


def folder_images_per_s(
    folder: Path, size: int, batch: int, loader_workers: int
) -> tuple[float, int]:
    from orchestrator.data.args import ImageDataArgs
    from orchestrator.data.images import folder_loader, scan_folder

    d = ImageDataArgs.model_validate(
        {
            "path": str(folder),
            "image_size": size,
            "augment": AUGMENT,
            "loader_workers": loader_workers,
        }
    )
    idx = scan_folder(folder)
    loader, sampler = folder_loader(idx.samples, d, batch, 0, 1, 0, train=True)
    t = time.perf_counter()
    n = sum(len(b["label"]) for b in loader)
    return n / (time.perf_counter() - t), n


def ray_data_images_per_s(shards: Path, size: int, batch: int) -> tuple[float, int, float]:
    """One consumer over the whole dataset; returns (images/s of the pass, images, 2nd pass)."""
    from orchestrator.data.args import ImageDataArgs
    from orchestrator.data.augment import Augmenter
    from orchestrator.data.shards import augment_collate, ray_image_dataset

    d = ImageDataArgs.model_validate(
        {"path": str(shards), "image_size": size, "augment": AUGMENT, "val_fraction": 0}
    )
    ds = ray_image_dataset(str(shards), d)
    aug = Augmenter(d, train=True, seed=0)
    rates = []
    for epoch in range(2):
        t = time.perf_counter()
        n = sum(
            len(b["label"])
            for b in ds.iter_torch_batches(
                batch_size=batch, collate_fn=augment_collate(aug, epoch), prefetch_batches=2
            )
        )
        rates.append(n / (time.perf_counter() - t))
    return rates[0], n, rates[1]


def train_samples_per_s(
    workers: int, steps: int, size: int, batch: int, storage: Path, data_path: Path
) -> dict:
    from rich.console import Console

    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.rundir import read_metrics
    from orchestrator.spec import load_spec

    spec = load_spec(
        ROOT / "jobs/resnet_images.yaml",
        [
            "train.arch=resnet50",
            f"train.max_steps={steps}",
            "train.epochs=1000",
            f"train.batch_size={batch}",
            "train.log_every=1",
            "train.channels_last=false",
            f"data.image_size={size}",
            f"data.path={data_path}",
            "data.val_fraction=0.02",
            "data.loader_workers=1",
            f"resources.workers={workers}",
            f"storage_path={storage}",
            f"name=r50-{workers}w",
            "checkpoint.every_steps=100000",
        ],
    )
    t = time.perf_counter()
    summary = launch(plan(spec), console=Console(quiet=True))
    wall = time.perf_counter() - t
    if summary["status"] != "SUCCEEDED":
        raise SystemExit(f"training run failed: {summary['error']}")
    rows = [r for r in read_metrics(summary["run_dir"]) if "samples_per_s" in r]
    timed = [r["samples_per_s"] for r in rows if r["step"] > 2]  # steps 1-2: warm-up
    return {
        "workers": workers,
        "samples_per_s": statistics.median(timed),
        "steps": steps,
        "batch_per_worker": batch,
        "image_size": size,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=2000, help="generated images (4 classes)")
    p.add_argument("--size", type=int, default=64, help="image side for part 1")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes (folder)")
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--train-size", type=int, default=32, help="image side for ResNet-50 training")
    p.add_argument("--train-batch", type=int, default=8, help="per worker")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--aug-images", type=int, default=512, help="JPEGs for part 1 (4 classes)")
    p.add_argument("--aug-size", type=int, default=224, help="part 1: image_size (the crop)")
    p.add_argument("--aug-resize", type=int, default=256, help="part 1: files and resize side")
    p.add_argument("--aug-passes", type=int, default=3, help="part 1: passes (median)")
    p.add_argument("--only-augment", action="store_true", help="part 1 only (no Ray)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    from orchestrator.data.shapes import make_shapes

    work = Path(tempfile.mkdtemp(prefix="orch-bench-input-"))
    jpgs = make_shapes(
        work / "jpg",
        per_class=max(1, a.aug_images // 4),
        val_per_class=1,
        size=a.aug_resize,
        fmt="jpg",
    )
    r = augment_compare(jpgs / "train", a.aug_size, a.aug_resize, a.batch, a.aug_passes)
    out: dict = {"augment": r}
    print(
        f"decode + augment, {r['images']} JPEGs {a.aug_resize}x{a.aug_resize} -> random "
        f"{a.aug_size}x{a.aug_size} crop + {json.dumps(AUGMENT)}, batch {a.batch}, one thread, "
        f"median of {r['passes']} passes:"
    )
    print(f"  decode alone:                             {r['decode_img_s']:8.0f} img/s")
    print(
        f"  old: per image, scipy.ndimage (decode+aug): {r['old_img_s']:6.0f} img/s   "
        f"augment alone {r['old_augment_img_s']:6.0f} img/s"
    )
    print(
        f"  new: batched, grid_sample     (decode+aug): {r['new_img_s']:6.0f} img/s   "
        f"augment alone {r['new_augment_img_s']:6.0f} img/s"
    )
    print(
        f"  new / old: decode + augment {r['ratio']:.2f}x, augment alone "
        f"{r['augment_ratio']:.2f}x; outputs differ by at most {r['max_level_diff']:.0f} "
        f"uint8 level(s), in {100 * r['share_pixels_differing']:.3f}% of values"
    )
    if a.only_augment:
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2))
        return out

    import torch

    torch.set_num_threads(max(1, torch.get_num_interop_threads()))  # undo part 1's limit
    from orchestrator import runtime
    from orchestrator.data.shards import pack_folder

    per = max(1, a.images // 4)
    root = make_shapes(work / "shapes", per_class=per, val_per_class=1, size=a.size)
    t = time.perf_counter()
    rep = pack_folder(root / "train", work / "shards", rows_per_shard=max(64, per // 4))
    pack_s = time.perf_counter() - t
    print(
        f"{rep.rows} images {a.size}x{a.size} png; packed into {len(rep.shards)} shards "
        f"({rep.bytes / 2**20:.1f} MiB) in {pack_s:.1f} s "
        f"({rep.rows / pack_s:.0f} img/s, decode-checked)"
    )

    out.update(images=rep.rows, size=a.size, batch=a.batch)
    f_rate, n = folder_images_per_s(root / "train", a.size, a.batch, a.loader_workers)
    runtime.connect(num_cpus=4)
    try:
        r_rate, n2, r_rate2 = ray_data_images_per_s(work / "shards", a.size, a.batch)
        assert n == n2 == rep.rows, (n, n2, rep.rows)
        out.update(folder_img_s=f_rate, ray_data_img_s=r_rate, ray_data_img_s_pass2=r_rate2)
        print(f"\ndecode + augment at {a.size} px, no model (one consumer, whole data set):")
        print(f"  folder + DataLoader ({a.loader_workers} worker proc): {f_rate:8.0f} img/s")
        print(
            f"  Parquet + Ray Data, pass 1:            {r_rate:8.0f} img/s  "
            f"({r_rate / f_rate:.2f}x folder)"
        )
        print(
            f"  Parquet + Ray Data, pass 2:            {r_rate2:8.0f} img/s  "
            f"({r_rate2 / f_rate:.2f}x folder)"
        )
        if not a.skip_train:
            res = [
                train_samples_per_s(
                    w, a.train_steps, a.train_size, a.train_batch, work / "runs", root / "train"
                )
                for w in (1, 2)
            ]
            out["train"] = res
            print(
                f"\nResNet-50 training, {a.train_size}x{a.train_size}, "
                f"batch {a.train_batch}/worker, "
                f"{a.train_steps} steps (median after 2 warm-up steps):"
            )
            for r in res:
                print(
                    f"  {r['workers']} worker(s): {r['samples_per_s']:7.1f} samples/s  "
                    f"(run wall {r['wall_s']:.0f} s)"
                )
            print(
                f"  2 workers / 1 worker: {res[1]['samples_per_s'] / res[0]['samples_per_s']:.2f}x"
            )
    finally:
        import ray

        ray.shutdown()
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
