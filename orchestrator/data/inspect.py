"""Looking at data: what `orch data inspect` and `orch data preview` show.

    orch data inspect data/shapes/train --grid g.png --verify   # summarize + sample_images
    orch data preview jobs/resnet_images.yaml --out p.png       # Augmenter tiles in image_grid

    info = summarize("shards/train", verify=True)   # classes, counts, rows, bad files
    imgs, labels = sample_images("data/shapes/train", n=16, size=64)
    image_grid(imgs, labels, cols=8).save("g.png")

A path is read as Parquet shards when it holds .parquet files (or a shard manifest), else as
an image folder; either way nothing is written next to the data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from orchestrator.data.images import (
    BadImageError,
    DataError,
    Sample,
    base_array,
    decode_image,
    scan_folder,
)
from orchestrator.data.shards import SHARDS_MANIFEST, check_shards, iter_shard_rows


def image_grid(images: list, labels: list[str] | None = None, cols: int = 8, scale: int = 1):
    """uint8 HWC arrays -> one PIL image, captioned with `labels` when given."""
    from PIL import Image, ImageDraw

    if not images:
        raise DataError("no images to draw")
    h, w = images[0].shape[:2]
    h, w = h * scale, w * scale
    cap = 12 if labels else 0
    cols = max(1, min(cols, len(images)))
    rows = math.ceil(len(images) / cols)
    pad = 2
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + cap + pad) + pad), (255, 255, 255))
    d = ImageDraw.Draw(grid)
    for i, arr in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad), pad + r * (h + cap + pad)
        tile = Image.fromarray(arr)
        if scale != 1:
            tile = tile.resize((w, h), Image.Resampling.NEAREST)
        grid.paste(tile, (x, y))
        if labels:
            d.text((x, y + h), str(labels[i])[: max(3, w // 6)], fill=(0, 0, 0))
    return grid


def summarize(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """Classes, counts and (with `verify`) the bad files of a folder or a shard folder."""
    p = Path(path)
    if p.is_dir() and (any(p.glob("*.parquet")) or (p / SHARDS_MANIFEST).exists()):
        shards, classes, rows = check_shards(p)
        counts = dict.fromkeys(classes, 0)
        bad = []
        for row in iter_shard_rows(p, columns=["label", "file"] + (["image"] if verify else [])):
            counts[classes[row["label"]]] += 1
            if verify:
                try:
                    decode_image(row["image"], row["file"])
                except BadImageError as exc:
                    bad.append({"file": row["file"], "reason": exc.reason})
        return {
            "path": str(p),
            "format": "parquet",
            "classes": classes,
            "counts": counts,
            "rows": rows,
            "shards": len(shards),
            "bytes": sum(os.path.getsize(s) for s in shards),
            "bad": bad,
        }
    idx = scan_folder(p)
    bad = []
    if verify:
        for s in idx.samples:
            try:
                decode_image(s.file)
            except BadImageError as exc:
                bad.append({"file": s.file, "reason": exc.reason})
    return {
        "path": idx.root,
        "format": "folder",
        "classes": idx.classes,
        "counts": idx.counts(),
        "rows": len(idx.samples),
        "ignored": idx.ignored,
        "bad": bad,
    }


def sample_images(
    path: str | Path, n: int = 16, size: int = 64, seed: int = 0
) -> tuple[list, list[str]]:
    """Up to n images (uint8, size x size) spread over the classes, with their class names."""
    import numpy as np

    p = Path(path)
    out, labels = [], []
    if p.is_dir() and any(p.glob("*.parquet")):
        _, classes, rows = check_shards(p)
        pick = set(
            np.random.default_rng(seed).choice(rows, size=min(n, rows), replace=False).tolist()
        )
        for k, row in enumerate(iter_shard_rows(p)):
            if k in pick:
                try:
                    out.append(base_array(decode_image(row["image"], row["file"]), size))
                    labels.append(classes[row["label"]])
                except BadImageError:
                    continue
        return out, labels
    idx = scan_folder(p)
    order = np.random.default_rng(seed).permutation(len(idx.samples))
    by_class: dict[int, list[Sample]] = {}
    for i in order:
        by_class.setdefault(idx.samples[i].label, []).append(idx.samples[i])
    picked: list[Sample] = []
    while len(picked) < min(n, len(idx.samples)):
        for lab in sorted(by_class):
            if by_class[lab] and len(picked) < n:
                picked.append(by_class[lab].pop())
    for s in picked:
        try:
            out.append(base_array(decode_image(s.file), size))
            labels.append(idx.classes[s.label])
        except BadImageError:
            continue
    return out, labels
