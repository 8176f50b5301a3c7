"""Every YAML in cluster/ passes `orch cluster validate`; known-bad copies fail with the
expected messages at the expected paths. No Ray runtime."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from orchestrator import cluster
from orchestrator.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
FILES = cluster.cluster_files(CLUSTER)


def _app() -> typer.Typer:
    from orchestrator.cli import app

    return app


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


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_cluster_yaml_passes(path):
    assert cluster.validate_file(path) == []


def test_cli_validates_every_file_in_cluster_dir(monkeypatch):
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(_app(), ["cluster", "validate"])
    assert res.exit_code == 0, res.output
    for p in FILES:
        assert f"ok: cluster/{p.name}" in res.output


def _gpu():
    return yaml.safe_load((CLUSTER / "gpu.yaml").read_text())


def _gcp():
    return yaml.safe_load((CLUSTER / "gcp-gpu.yaml").read_text())


def _kuberay():
    return list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))


def _set(d, dotted, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if value is _DEL:
        del d[last]
    else:
        d[int(last) if isinstance(d, list) else last] = value


_DEL = object()
A10G = "available_node_types.gpu_a10g"
RC = "RayCluster(orch-gpu).spec"
W0 = "workerGroupSpecs.0.template.spec.containers.0"


def _mut(base, *changes):
    def make():
        doc = base()
        for dotted, value in changes:
            target = doc
            if isinstance(doc, list):  # kuberay: "0:spec...." picks the document
                idx, dotted = dotted.split(":", 1)
                target = doc[int(idx)]
            _set(target, dotted, value)
        return doc

    return make


BAD = [
    (
        "gpu pool without GPU",
        _mut(_gpu, (f"{A10G}.resources.GPU", _DEL)),
        f"{A10G}.resources.GPU",
        "GPU pool declares no GPU resources: g5.2xlarge has 1 GPU(s)",
    ),
    (
        "GPU count wrong for instance",
        _mut(_gpu, (f"{A10G}.resources.GPU", 4)),
        f"{A10G}.resources.GPU",
        "g5.2xlarge has 1 GPU(s) (given: 4)",
    ),
    (
        "accelerator type wrong",
        _mut(_gpu, (f"{A10G}.resources", {"CPU": 8, "GPU": 1, "accelerator_type:A100": 1})),
        f"{A10G}.resources.accelerator_type:A100",
        "g5.2xlarge has A10G GPUs",
    ),
    (
        "GPU on a CPU instance",
        _mut(_gpu, ("available_node_types.head_cpu.resources.GPU", 1)),
        "available_node_types.head_cpu.resources.GPU",
        "m5.2xlarge has no GPU",
    ),
    (
        "pool max over cluster max",
        _mut(_gpu, ("available_node_types.gpu_a100.max_workers", 20)),
        "available_node_types.gpu_a100.max_workers",
        "exceeds the cluster's max_workers (12)",
    ),
    (
        "min over max",
        _mut(_gpu, ("available_node_types.gpu_a100.min_workers", 3)),
        "available_node_types.gpu_a100.min_workers",
        "must be <= max_workers (2)",
    ),
    (
        "sum of mins over cluster max",
        _mut(
            _gpu, (f"{A10G}.min_workers", 8), ("available_node_types.gpu_a10g_spot.min_workers", 8)
        ),
        "max_workers",
        "smaller than the sum of the pools' min_workers (16)",
    ),
    (
        "pool without max_workers",
        _mut(_gpu, (f"{A10G}.max_workers", _DEL)),
        f"{A10G}.max_workers",
        "set an upper bound",
    ),
    (
        "pool without CPU",
        _mut(_gpu, (f"{A10G}.resources", {"GPU": 1})),
        f"{A10G}.resources.CPU",
        "declare the pool's CPUs",
    ),
    (
        "world-open dashboard port",
        _mut(
            _gpu,
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
        _mut(
            _gpu,
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
        _mut(
            _gpu,
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
        _mut(
            _gpu,
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
        _mut(_gpu, ("head_start_ray_commands.1", "ray start --head --port=6379")),
        "head_start_ray_commands",
        "start Ray with token authentication",
    ),
    (
        "token never reaches nodes",
        _mut(_gpu, ("file_mounts", {"~/orchestrator": "."})),
        "file_mounts",
        "the cluster's token must reach every node",
    ),
    (
        "old Ray image",
        _mut(_gpu, ("docker.image", "rayproject/ray:2.9.0-gpu")),
        "docker.image",
        "must start with this project's Ray version",
    ),
    (
        "old Ray pin",
        _mut(_gpu, ("setup_commands", ["pip install 'ray[default]==2.9.0'"])),
        "setup_commands[0]",
        "pins Ray 2.9.0",
    ),
    (
        "schema: unknown key",
        _mut(_gpu, (f"{A10G}.min_worker", 0)),
        A10G,
        "Ray's cluster schema: Additional properties are not allowed ('min_worker' was unexpected)",
    ),
    (
        "schema: fractional GPU",
        _mut(_gpu, (f"{A10G}.resources.GPU", 0.5)),
        f"{A10G}.resources.GPU",
        "Ray's cluster schema: 0.5 is not of type 'integer'",
    ),
    (
        "schema: provider missing",
        _mut(_gpu, ("provider", _DEL)),
        "<root>",
        "Ray's cluster schema: 'provider' is a required property",
    ),
    (
        "head type unknown",
        _mut(_gpu, ("head_node_type", "head_gpu")),
        "head_node_type",
        "must be one of available_node_types",
    ),
    (
        "no idle timeout",
        _mut(_gpu, ("idle_timeout_minutes", _DEL)),
        "idle_timeout_minutes",
        "so idle (GPU) nodes are given back",
    ),
    (
        "gcp GPU VM may live-migrate",
        _mut(_gcp, ("available_node_types.gpu_l4.node_config.scheduling", {})),
        "available_node_types.gpu_l4.node_config.scheduling.onHostMaintenance",
        "set TERMINATE",
    ),
    (
        "gcp A100 count",
        _mut(_gcp, ("available_node_types.gpu_a100.resources.GPU", 4)),
        "available_node_types.gpu_a100.resources.GPU",
        "a2-highgpu-8g has 8 GPU(s)",
    ),
    (
        "kuberay LoadBalancer head",
        _mut(_kuberay, ("0:spec.headGroupSpec.serviceType", "LoadBalancer")),
        f"{RC}.headGroupSpec.serviceType",
        "use ClusterIP and `kubectl port-forward`",
    ),
    (
        "kuberay GPU group without GPU",
        _mut(_kuberay, (f"0:spec.{W0}.resources", {"limits": {"cpu": "7"}})),
        f"{RC}.workerGroupSpecs[0].template.spec.containers[0].resources.limits",
        "GPU group declares no GPU resources",
    ),
    (
        "kuberay GPU requests != limits",
        _mut(
            _kuberay,
            (
                f"0:spec.{W0}.resources",
                {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}},
            ),
        ),
        f"{RC}.workerGroupSpecs[0].template.spec.containers[0].resources.limits.nvidia.com/gpu",
        "must equal requests",
    ),
    (
        "kuberay token off",
        _mut(_kuberay, (f"0:spec.{W0}.env", [])),
        f"{RC}.workerGroupSpecs[0].template.spec.containers[0].env",
        "token authentication is off",
    ),
    (
        "kuberay old rayVersion",
        _mut(_kuberay, ("0:spec.rayVersion", "2.9.0")),
        f"{RC}.rayVersion",
        "must be this project's Ray version",
    ),
    (
        "kuberay no autoscaler",
        _mut(_kuberay, ("0:spec.enableInTreeAutoscaling", False)),
        f"{RC}.enableInTreeAutoscaling",
        "nothing scales them",
    ),
    (
        "kuberay min over max",
        _mut(_kuberay, ("0:spec.workerGroupSpecs.1.minReplicas", 5)),
        f"{RC}.workerGroupSpecs[1].minReplicas",
        "must be <= maxReplicas (2)",
    ),
    (
        "rayjob submitter without token",
        _mut(_kuberay, ("1:spec.submitterPodTemplate.spec.containers.0.env", [])),
        "RayJob(orch-mnist-gpu).spec.submitterPodTemplate.spec.containers[0].env",
        "the submitter calls the Jobs API",
    ),
    (
        "rayjob without entrypoint",
        _mut(_kuberay, ("1:spec.entrypoint", _DEL)),
        "RayJob(orch-mnist-gpu).spec.entrypoint",
        "required",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_known_bad_copies_fail_with_expected_messages(case, tmp_path):
    _, make, path, message = case
    doc = make()
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump_all(doc) if isinstance(doc, list) else yaml.safe_dump(doc))
    errors = cluster.validate_file(f)
    hits = [e for e in errors if e.path == path and message in str(e)]
    assert hits, f"expected {path}: {message}\ngot:\n" + "\n".join(map(str, errors))


def test_cli_reports_every_problem_with_its_path_and_exits_2(tmp_path):
    doc = _gpu()
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


def test_invalid_yaml_and_missing_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("cluster_name: x\nprovider: [unclosed\n")
    with pytest.raises(SpecError, match=r"<yaml>: invalid YAML at line"):
        cluster.validate_file(f)
    with pytest.raises(SpecError, match="cluster file not found"):
        cluster.validate_file(tmp_path / "nope.yaml")


def test_node_types_of_gpu_yaml():
    types = cluster.node_types(CLUSTER / "gpu.yaml")
    assert types["head_cpu"].is_head and types["head_cpu"].gpus == 0
    gpu_pools = {n: t for n, t in types.items() if t.gpus}
    assert set(gpu_pools) == {"gpu_a10g", "gpu_a100", "gpu_a10g_spot"}
    assert (types["gpu_a10g"].min_workers, types["gpu_a10g"].max_workers) == (0, 8)
    assert (types["gpu_a100"].gpus, types["gpu_a100"].max_workers) == (8, 2)
    with pytest.raises(SpecError, match="expected a `ray up` config"):
        cluster.node_types(CLUSTER / "kuberay.yaml")


def test_fake_multinode_config_from_gpu_yaml_is_valid_and_light():
    cfg = cluster.fake_multinode_config(CLUSTER / "gpu.yaml", gcs_address="127.0.0.1:6480")
    assert cluster.launcher_errors(copy.deepcopy(cfg)) == []
    assert cfg["provider"]["type"] == "fake_multinode"
    assert cfg["provider"]["gcs_address"] == "127.0.0.1:6480"
    pools = cfg["available_node_types"]
    assert set(pools) == {"ray.head.default", "gpu_a10g", "gpu_a100", "gpu_a10g_spot"}
    assert pools["gpu_a100"]["resources"]["GPU"] == 8  # GPU counts kept
    assert pools["gpu_a100"]["resources"]["CPU"] == 1  # CPUs scaled down for one machine
    assert pools["gpu_a10g"]["resources"]["accelerator_type:A10G"] == 1
    assert all(p["max_workers"] <= 1 for p in pools.values())
