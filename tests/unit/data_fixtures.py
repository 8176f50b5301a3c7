"""Small image folders for the orchestrator.data unit tests (test_data_*.py, test_cli_data.py).

Each test module wraps these in its own fixtures (a module-scoped `shapes` folder, a
`folder_with_bad` copy of its training split with one truncated image).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.data.args import ImageDataArgs
from orchestrator.data.shapes import make_shapes


def small_shapes(root: Path) -> Path:
    """3 classes x (6 train + 2 val) images of 16 px."""
    return make_shapes(
        root, per_class=6, val_per_class=2, size=16, classes=["circle", "square", "cross"]
    )


def with_truncated_image(shapes: Path, root: Path) -> Path:
    """A copy of `shapes/train` at `root` whose square/square_00002.png is truncated."""
    shutil.copytree(shapes / "train", root)
    bad = root / "square" / "square_00002.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    return root


def image_args(**kw) -> ImageDataArgs:
    return ImageDataArgs.model_validate({"image_size": 16, **kw})
