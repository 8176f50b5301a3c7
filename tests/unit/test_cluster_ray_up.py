"""orchestrator.cluster.ray_up: known-bad copies of cluster/gpu.yaml (AWS) and
cluster/gcp-gpu.yaml fail with the expected messages at the expected paths (Ray's schema, worker
pools, GPU counts of machine types, security groups, start commands, tokens, images). No Ray
runtime."""

from __future__ import annotations

import pytest

from tests.unit.cluster_fixtures import DEL, assert_problem, gcp, gpu, mutated

A10G = "available_node_types.gpu_a10g"

BAD = [
    (
        "gpu pool without GPU",
        mutated(gpu, (f"{A10G}.resources.GPU", DEL)),
        f"{A10G}.resources.GPU",
        "GPU pool declares no GPU resources: g5.2xlarge has 1 GPU(s)",
    ),
    (
        "GPU count wrong for instance",
        mutated(gpu, (f"{A10G}.resources.GPU", 4)),
        f"{A10G}.resources.GPU",
        "g5.2xlarge has 1 GPU(s) (given: 4)",
    ),
    (
        "accelerator type wrong",
        mutated(gpu, (f"{A10G}.resources", {"CPU": 8, "GPU": 1, "accelerator_type:A100": 1})),
        f"{A10G}.resources.accelerator_type:A100",
        "g5.2xlarge has A10G GPUs",
    ),
    (
        "GPU on a CPU instance",
        mutated(gpu, ("available_node_types.head_cpu.resources.GPU", 1)),
        "available_node_types.head_cpu.resources.GPU",
        "m5.2xlarge has no GPU",
    ),
    (
        "pool max over cluster max",
        mutated(gpu, ("available_node_types.gpu_a100.max_workers", 20)),
        "available_node_types.gpu_a100.max_workers",
        "exceeds the cluster's max_workers (12)",
    ),
    (
        "min over max",
        mutated(gpu, ("available_node_types.gpu_a100.min_workers", 3)),
        "available_node_types.gpu_a100.min_workers",
        "must be <= max_workers (2)",
    ),
    (
        "sum of mins over cluster max",
        mutated(
            gpu, (f"{A10G}.min_workers", 8), ("available_node_types.gpu_a10g_spot.min_workers", 8)
        ),
        "max_workers",
        "smaller than the sum of the pools' min_workers (16)",
    ),
    (
        "pool without max_workers",
        mutated(gpu, (f"{A10G}.max_workers", DEL)),
        f"{A10G}.max_workers",
        "set an upper bound",
    ),
    (
        "pool without CPU",
        mutated(gpu, (f"{A10G}.resources", {"GPU": 1})),
        f"{A10G}.resources.CPU",
        "declare the pool's CPUs",
    ),
    (
        "world-open dashboard port",
        mutated(
            gpu,
            (
                "provider.security_group.IpPermissions",
                [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 8265,
                        "ToPort": 8265,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                    }
                ],
            ),
        ),
        "provider.security_group.IpPermissions[0].IpRanges[0].CidrIp",
        "opens Ray's ports 8265 (dashboard / Jobs API)",
    ),
    (
        "all ports open over IPv6",
        mutated(
            gpu,
            (
                "provider.security_group.IpPermissions",
                [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                    },
                    {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
                ],
            ),
        ),
        "provider.security_group.IpPermissions[1].Ipv6Ranges[0].CidrIpv6",
        "6379 (GCS)",
    ),
    (
        "dashboard on every interface",
        mutated(
            gpu,
            (
                "head_start_ray_commands.1",
                "export RAY_AUTH_MODE=token; ray start --head --dashboard-host=0.0.0.0",
            ),
        ),
        "head_start_ray_commands[1]",
        "binds the dashboard / Jobs API to every interface",
    ),
    (
        "token auth turned off",
        mutated(
            gpu,
            (
                "worker_start_ray_commands.1",
                "export RAY_AUTH_MODE=disabled; ray start --address=$RAY_HEAD_IP:6379",
            ),
        ),
        "worker_start_ray_commands[1]",
        "turns Ray token authentication off",
    ),
    (
        "head without token mode",
        mutated(gpu, ("head_start_ray_commands.1", "ray start --head --port=6379")),
        "head_start_ray_commands",
        "start Ray with token authentication",
    ),
    (
        "token never reaches nodes",
        mutated(gpu, ("file_mounts", {"~/orchestrator": "."})),
        "file_mounts",
        "the cluster's token must reach every node",
    ),
    (
        "old Ray image",
        mutated(gpu, ("docker.image", "rayproject/ray:2.9.0-gpu")),
        "docker.image",
        "must start with this project's Ray version",
    ),
    (
        "old Ray pin",
        mutated(gpu, ("setup_commands", ["pip install 'ray[default]==2.9.0'"])),
        "setup_commands[0]",
        "pins Ray 2.9.0",
    ),
    (
        "schema: unknown key",
        mutated(gpu, (f"{A10G}.min_worker", 0)),
        A10G,
        "Ray's cluster schema: Additional properties are not allowed ('min_worker' was unexpected)",
    ),
    (
        "schema: fractional GPU",
        mutated(gpu, (f"{A10G}.resources.GPU", 0.5)),
        f"{A10G}.resources.GPU",
        "Ray's cluster schema: 0.5 is not of type 'integer'",
    ),
    (
        "schema: provider missing",
        mutated(gpu, ("provider", DEL)),
        "<root>",
        "Ray's cluster schema: 'provider' is a required property",
    ),
    (
        "head type unknown",
        mutated(gpu, ("head_node_type", "head_gpu")),
        "head_node_type",
        "must be one of available_node_types",
    ),
    (
        "no idle timeout",
        mutated(gpu, ("idle_timeout_minutes", DEL)),
        "idle_timeout_minutes",
        "so idle (GPU) nodes are given back",
    ),
    (
        "gcp GPU VM may live-migrate",
        mutated(gcp, ("available_node_types.gpu_l4.node_config.scheduling", {})),
        "available_node_types.gpu_l4.node_config.scheduling.onHostMaintenance",
        "set TERMINATE",
    ),
    (
        "gcp A100 count",
        mutated(gcp, ("available_node_types.gpu_a100.resources.GPU", 4)),
        "available_node_types.gpu_a100.resources.GPU",
        "a2-highgpu-8g has 8 GPU(s)",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_known_bad_copies_fail_with_expected_messages(case, tmp_path):
    _, make, path, message = case
    assert_problem(make(), tmp_path, path, message)
