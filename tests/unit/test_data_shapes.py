"""orchestrator.data.shapes: the generated shapes folder (no Ray, well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.data.images import scan_folder
from orchestrator.data.shapes import make_shapes
from tests.unit.data_fixtures import small_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return small_shapes(tmp_path_factory.mktemp("shapes") / "s")


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
