"""`orch cluster validate` (orchestrator.cli.cluster): every file in ./cluster passes; a bad
file's problems are listed with their paths, exit 2, and the good files are still reported."""

from __future__ import annotations

import typer
import yaml
from typer.testing import CliRunner

from orchestrator.cluster.config import cluster_files
from tests.unit.cluster_fixtures import CLUSTER, ROOT, gpu

FILES = cluster_files(CLUSTER)


def _app() -> typer.Typer:
    from orchestrator.cli import app

    return app


def test_cli_validates_every_file_in_cluster_dir(monkeypatch):
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(_app(), ["cluster", "validate"])
    assert res.exit_code == 0, res.output
    for p in FILES:
        assert f"ok: cluster/{p.name}" in res.output


def test_cli_reports_every_problem_with_its_path_and_exits_2(tmp_path):
    doc = gpu()
    doc["available_node_types"]["gpu_a10g"]["resources"].pop("GPU")
    doc["provider"]["security_group"]["IpPermissions"] = [
        {
            "IpProtocol": "tcp",
            "FromPort": 6379,
            "ToPort": 6379,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        }
    ]
    bad = tmp_path / "bad-gpu.yaml"
    bad.write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(_app(), ["cluster", "validate", str(bad), str(CLUSTER / "gpu.yaml")])
    assert res.exit_code == 2
    assert "2 error(s) in" in res.output and "bad-gpu.yaml" in res.output
    assert (
        "available_node_types.gpu_a10g.resources.GPU: GPU pool declares no GPU resources"
        in res.output
    )
    assert (
        "provider.security_group.IpPermissions[0].IpRanges[0].CidrIp: opens Ray's ports 6379 (GCS)"
        in res.output
    )
    assert "ok: " in res.output and "gpu.yaml" in res.output  # the good file still reported
