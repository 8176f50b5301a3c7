"""orchestrator.data.inspect: summaries and sample grids."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.data.inspect import image_grid, sample_images, summarize
from tests.unit.data_fixtures import small_shapes, with_truncated_image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return small_shapes(tmp_path_factory.mktemp("shapes") / "s")


@pytest.fixture
def folder_with_bad(shapes, tmp_path) -> Path:
    return with_truncated_image(shapes, tmp_path / "f")


def test_summarize_and_grid(folder_with_bad, tmp_path):
    info = summarize(folder_with_bad, verify=True)
    assert info["rows"] == 18 and len(info["bad"]) == 1
    imgs, labels = sample_images(folder_with_bad, n=6, size=24)
    assert set(labels) == {"circle", "cross", "square"}
    g = image_grid(imgs, labels, cols=3)
    assert g.size[0] > 3 * 24
