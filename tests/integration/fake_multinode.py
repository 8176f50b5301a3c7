"""A config for Ray's fake multi-node autoscaler (one machine, logical GPUs) with the worker
pools of a real `ray up` YAML; tests/integration/test_autoscaler.py starts a head with it.

    config = fake_multinode_config("cluster/gpu.yaml", gcs_address=head.gcs_address)
    # dumped to a file:  RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE

cluster/local-fake.yaml is the same kind of config, written by hand, for trying it by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.cluster.config import node_types


def fake_multinode_config(
    source: str | Path,
    gcs_address: str | None = None,
    idle_timeout_minutes: float = 0.1,
    max_workers_per_type: int = 1,
    cpus_per_node: int = 1,
    object_store_memory: int = 100_000_000,
) -> dict[str, Any]:
    """A config for Ray's fake multi-node autoscaler (one machine) with the worker pools of a
    real cluster YAML: the same names, GPU counts and custom resources (accelerator_type:*,
    spot), min_workers kept, max_workers and CPUs scaled down so fake nodes stay light.

        RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=<this, dumped to a file>
    """
    pools = {}
    for name, nt in node_types(source).items():
        if nt.is_head:
            continue
        resources: dict[str, Any] = {}
        for key, value in nt.resources.items():
            if key == "memory":  # the fake node takes memory from this host, not from here
                continue
            resources[key] = min(int(value), cpus_per_node) if key == "CPU" else int(value)
        resources.setdefault("CPU", cpus_per_node)
        resources["object_store_memory"] = object_store_memory
        cap = nt.max_workers if nt.max_workers is not None else max_workers_per_type
        pools[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": min(nt.min_workers, max_workers_per_type),
            "max_workers": min(int(cap), max_workers_per_type),
        }
    provider: dict[str, Any] = {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
    }
    if gcs_address:
        provider["gcs_address"] = gcs_address  # the fake node launcher assumes :6379 otherwise
    return {
        "cluster_name": f"fake-{Path(source).stem}",
        "max_workers": sum(p["max_workers"] for p in pools.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": provider,
        "auth": {},
        "docker": {},
        # The fake provider calls the head that `ray start --head` started by this name.
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            **pools,
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
