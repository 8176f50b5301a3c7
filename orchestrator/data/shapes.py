"""An offline, learnable image folder: coloured geometric shapes, one class per shape.

    orch data make-shapes data/shapes --per-class 200 --val-per-class 50 --size 32
    python -c "from orchestrator.data.shapes import make_shapes; make_shapes('data/shapes')"

Writes `OUT/train/<class>/<class>_00000.png` and `OUT/val/<class>/...` (the layout of Keras'
flow_from_directory and torchvision's ImageFolder) plus `OUT/_shapes.json` with the settings.
Each image has a random background, shape colour (kept apart from the background), size,
position and tilt, and a little pixel noise, so a small CNN has to learn the shape, not a
colour. The same settings and seed always give the same bytes. Nothing is downloaded.

A job whose `data.path` is not set trains on these shapes: `ImageDataArgs.shapes` (args.py)
holds the settings and `ensure_default_data` (shards.py) makes them, and their shards, once
in `data.cache_dir`. `file_lock` serialises the processes that race to make them.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "bar")
DEFAULT_CLASSES = ("circle", "square", "triangle", "cross")
MANIFEST = "_shapes.json"


def _colour_pair(rng) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Background and foreground colours at least ~100 apart in brightness."""
    while True:
        bg = tuple(int(v) for v in rng.integers(0, 256, 3))
        fg = tuple(int(v) for v in rng.integers(0, 256, 3))
        if (
            abs(sum(bg) - sum(fg)) / 3 >= 70
            or max(abs(a - b) for a, b in zip(bg, fg, strict=True)) >= 140
        ):
            return bg, fg


def _polygon(cx: float, cy: float, points: list[tuple[float, float]], angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def draw_shape(kind: str, size: int, rng):
    """One RGB PIL image of `kind` drawn with random colour, scale, position and tilt."""
    import numpy as np
    from PIL import Image, ImageDraw

    ss = 4  # supersample, then downsample: smooth edges at small sizes
    big = size * ss
    bg, fg = _colour_pair(rng)
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.4) * big  # "radius" of the shape
    margin = r * 1.05
    cx = rng.uniform(margin, big - margin)
    cy = rng.uniform(margin, big - margin)
    angle = math.radians(rng.uniform(-20, 20))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "ring":
        w = r * 0.35
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        d.ellipse([cx - r + w, cy - r + w, cx + r - w, cy + r - w], fill=bg)
    elif kind == "square":
        h = r * 0.85
        d.polygon(_polygon(cx, cy, [(-h, -h), (h, -h), (h, h), (-h, h)], angle), fill=fg)
    elif kind == "triangle":
        pts = [
            (r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
        d.polygon(_polygon(cx, cy, pts, angle), fill=fg)
    elif kind == "cross":
        t = r * 0.3
        for pts in ([(-r, -t), (r, -t), (r, t), (-r, t)], [(-t, -r), (t, -r), (t, r), (-t, r)]):
            d.polygon(_polygon(cx, cy, pts, angle), fill=fg)
    elif kind == "bar":
        t = r * 0.3
        d.polygon(_polygon(cx, cy, [(-r, -t), (r, -t), (r, t), (-r, t)], angle), fill=fg)
    else:
        raise ValueError(f"unknown shape {kind!r}; expected one of {', '.join(SHAPE_CLASSES)}")
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created with its folder) for the `with` block: one
    process at a time, across processes on one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_shapes(
    out: str | Path,
    per_class: int = 200,
    val_per_class: int = 50,
    size: int = 32,
    classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    seed: int = 0,
    fmt: str = "png",
    overwrite: bool = False,
) -> Path:
    """Write the shapes folder at `out` (atomically; safe when several processes race).

    Returns `out`. An existing folder made with the same settings is reused as it is.
    """
    import numpy as np

    out = Path(out).expanduser().resolve()
    settings = {
        "per_class": per_class,
        "val_per_class": val_per_class,
        "size": size,
        "classes": list(classes),
        "seed": seed,
        "format": fmt,
    }
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown:
        raise ValueError(
            f"unknown shape class(es) {unknown}; expected some of {', '.join(SHAPE_CLASSES)}"
        )
    if fmt not in ("png", "jpg"):
        raise ValueError(f"format {fmt!r}: expected png or jpg")
    with file_lock(out.parent / f".{out.name}.lock"):
        manifest = out / MANIFEST
        if out.exists():
            if not overwrite and manifest.exists() and json.loads(manifest.read_text()) == settings:
                return out
            if not overwrite:
                raise FileExistsError(
                    f"{out} exists and was not made with these settings; pass overwrite=True "
                    "(--overwrite) or choose another folder"
                )
            shutil.rmtree(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            for split, count, offset in (("train", per_class, 0), ("val", val_per_class, 1)):
                for ci, kind in enumerate(classes):
                    folder = tmp / split / kind
                    folder.mkdir(parents=True)
                    # one stream per (seed, split, class): adding classes keeps the others' images
                    rng = np.random.default_rng([seed, offset, ci])
                    for i in range(count):
                        img = draw_shape(kind, size, rng)
                        path = folder / f"{kind}_{i:05d}.{fmt}"
                        if fmt == "jpg":
                            img.save(path, quality=92)
                        else:
                            img.save(path, optimize=False)
            (tmp / MANIFEST).write_text(json.dumps(settings))
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out
