"""tests/integration/fake_multinode.py without Ray: the fake autoscaler config built from
cluster/gpu.yaml passes the `ray up` rules, keeps the pools' GPUs and stays light."""

from __future__ import annotations

import copy

from orchestrator.cluster.ray_up import launcher_errors
from tests.integration.fake_multinode import fake_multinode_config
from tests.unit.cluster_fixtures import CLUSTER


def test_fake_multinode_config_from_gpu_yaml_is_valid_and_light():
    cfg = fake_multinode_config(CLUSTER / "gpu.yaml", gcs_address="127.0.0.1:6480")
    assert launcher_errors(copy.deepcopy(cfg)) == []
    assert cfg["provider"]["type"] == "fake_multinode"
    assert cfg["provider"]["gcs_address"] == "127.0.0.1:6480"
    pools = cfg["available_node_types"]
    assert set(pools) == {"ray.head.default", "gpu_a10g", "gpu_a100", "gpu_a10g_spot"}
    assert pools["gpu_a100"]["resources"]["GPU"] == 8  # GPU counts kept
    assert pools["gpu_a100"]["resources"]["CPU"] == 1  # CPUs scaled down for one machine
    assert pools["gpu_a10g"]["resources"]["accelerator_type:A10G"] == 1
    assert all(p["max_workers"] <= 1 for p in pools.values())
