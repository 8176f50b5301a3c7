"""orchestrator.cluster.config: every YAML in cluster/ passes validate_file; unreadable files
fail with their reason; the node types of a `ray up` config. No Ray runtime."""

from __future__ import annotations

import pytest

from orchestrator.cluster import config
from orchestrator.errors import SpecError
from tests.unit.cluster_fixtures import CLUSTER

FILES = config.cluster_files(CLUSTER)


def test_the_cluster_dir_has_the_promised_files():
    names = {p.name for p in FILES}
    assert {"gpu.yaml", "gcp-gpu.yaml", "kuberay.yaml", "local-fake.yaml"} <= names
    for p in FILES:  # each starts with a comment showing how to launch it
        first = p.read_text().splitlines()[0]
        assert first.startswith("# "), p
        assert any(
            cmd in p.read_text().split("\n\n")[0]
            for cmd in ("ray up", "kubectl apply", "ray start")
        ), p


def test_invalid_yaml_and_missing_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("cluster_name: x\nprovider: [unclosed\n")
    with pytest.raises(SpecError, match=r"<yaml>: invalid YAML at line"):
        config.validate_file(f)
    with pytest.raises(SpecError, match="cluster file not found"):
        config.validate_file(tmp_path / "nope.yaml")


def test_node_types_of_gpu_yaml():
    types = config.node_types(CLUSTER / "gpu.yaml")
    assert types["head_cpu"].is_head and types["head_cpu"].gpus == 0
    gpu_pools = {n: t for n, t in types.items() if t.gpus}
    assert set(gpu_pools) == {"gpu_a10g", "gpu_a100", "gpu_a10g_spot"}
    assert (types["gpu_a10g"].min_workers, types["gpu_a10g"].max_workers) == (0, 8)
    assert (types["gpu_a100"].gpus, types["gpu_a100"].max_workers) == (8, 2)
    with pytest.raises(SpecError, match="expected a `ray up` config"):
        config.node_types(CLUSTER / "kuberay.yaml")
