"""Fail-fast capacity arithmetic (no Ray): bundles cannot split across nodes; autoscaler
pools from a cluster YAML count up to their max_workers."""

from __future__ import annotations

import pytest

from orchestrator.errors import InsufficientResourcesError
from orchestrator.runtime import capacity, check_fits

TWO_CPU = [{"CPU": 2.0, "memory": 1e9}]


def test_bundle_must_fit_one_node():
    assert capacity({"CPU": 3}, TWO_CPU + TWO_CPU) == 0
    assert capacity({"CPU": 1}, TWO_CPU + TWO_CPU) == 4


def test_gpus_on_a_cpu_cluster_fail_fast_with_names():
    with pytest.raises(InsufficientResourcesError) as info:
        check_fits(2, {"CPU": 1, "GPU": 1}, nodes=TWO_CPU)
    msg = str(info.value)
    assert "GPU=1" in msg and "2 worker(s)" in msg and "gpus_per_worker" in msg


def test_cluster_yaml_pools_are_counted():
    # cluster/gpu.yaml has GPU pools: a 4-GPU request fits once the autoscaler grows.
    check_fits(4, {"CPU": 1, "GPU": 1}, cluster_yaml="cluster/gpu.yaml", nodes=TWO_CPU)
    with pytest.raises(InsufficientResourcesError, match="cluster/gpu.yaml"):
        check_fits(1, {"CPU": 1, "GPU": 64}, cluster_yaml="cluster/gpu.yaml", nodes=TWO_CPU)
