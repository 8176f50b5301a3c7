"""Ray's fake multi-node autoscaler with the node types of cluster/gpu.yaml: a job asking for
a GPU scales the A10G pool up from zero nodes, and the pool scales back down once it is idle.

The fake provider starts "nodes" as Ray processes on this machine (GPUs are logical), on the
GCS port our head uses (provider.gcs_address), with idle_timeout_minutes 0.1.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster import jobs
from orchestrator.cluster.config import node_types
from tests.integration.fake_multinode import fake_multinode_config
from tests.integration.local_head import LocalHead

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

GPU_JOB = (
    'python -c "import os, ray; ray.init(); '
    "f = ray.remote(num_gpus=1, accelerator_type='A10G')"
    "(lambda: (os.environ.get('RAY_NODE_TYPE_NAME'), ray.get_gpu_ids())); "
    "print('ran on', ray.get(f.remote()))\""
)


def _gpu_nodes(head) -> dict[str, str]:
    """node id -> state for nodes with GPUs, from the dashboard's state API."""
    return {
        n["node_id"]: n["state"]
        for n in head.state_list("nodes", detail=True)
        if (n.get("resources_total") or {}).get("GPU")
    }


def _wait(cond, timeout_s: float, every: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    return cond()


def test_gpu_job_scales_the_gpu_pool_from_zero_and_back(tmp_path):
    head = LocalHead(
        num_cpus=1,
        gcs_port_from=6480,
        extra_env={
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        },
    )
    config = fake_multinode_config(
        ROOT / "cluster" / "gpu.yaml", gcs_address=head.gcs_address, idle_timeout_minutes=0.1
    )
    pools = {k: v for k, v in config["available_node_types"].items() if k != "ray.head.default"}
    real = node_types(ROOT / "cluster" / "gpu.yaml")
    assert set(pools) == {n for n, t in real.items() if not t.is_head}
    assert pools["gpu_a10g"]["resources"]["GPU"] == real["gpu_a10g"].gpus == 1
    assert all(p["min_workers"] == 0 for p in pools.values())  # GPU pools start empty
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(config))
    head.autoscaling_config = str(path)

    with head:
        assert _gpu_nodes(head) == {}, "the GPU pools must start at zero nodes"
        client = jobs.make_client(head.dashboard_url, env=head.env)
        sid = client.submit_job(entrypoint=GPU_JOB, submission_id="gpu-job")

        up = _wait(lambda: {k for k, s in _gpu_nodes(head).items() if s == "ALIVE"}, 120)
        assert up, f"no GPU node came up:\n{head.log_tail()}"

        status = jobs.wait_terminal(client, head.dashboard_url, sid, timeout_s=120)
        logs = client.get_job_logs(sid)
        assert status == "SUCCEEDED", logs
        assert "ran on ('gpu_a10g', [0])" in logs  # the A10G pool of cluster/gpu.yaml, by name

        down = _wait(lambda: all(_gpu_nodes(head).get(n) == "DEAD" for n in up), 90)
        assert down, f"GPU node(s) {up} still alive after the job ended: {_gpu_nodes(head)}"
