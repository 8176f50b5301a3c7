"""`orch data` (orchestrator.cli.data): pack, inspect and preview through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.data_fixtures import small_shapes, with_truncated_image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return small_shapes(tmp_path_factory.mktemp("shapes") / "s")


@pytest.fixture
def folder_with_bad(shapes, tmp_path) -> Path:
    return with_truncated_image(shapes, tmp_path / "f")


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
    assert res.exit_code == 5 and "square_00002.png" in res.output
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
