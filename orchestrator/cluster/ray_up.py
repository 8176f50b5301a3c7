"""The rules for a `ray up` (cluster launcher) config: Ray's own schema, then this project's.

    orch cluster validate cluster/gpu.yaml         # config.validate_file -> launcher_errors here

`launcher_errors(config)` checks one `ray up` document against `ray/autoscaler/ray-schema.json`
of the installed Ray, then against these rules, and returns every problem with its path:

- every worker pool declares its resources (CPU; GPU on GPU machine types, matching the count
  the AWS / GCP machine type has, and its accelerator_type) and
  min_workers <= max_workers <= the cluster's max_workers; GCP GPU VMs do not live-migrate;
- head_node_type names a node type; idle_timeout_minutes is set (GPU pools scale back down);
- no 0.0.0.0/0 (or ::/0) rule reaches Ray's ports, the dashboard is not bound to 0.0.0.0,
  token authentication stays on (RAY_AUTH_MODE=token, with the token reaching every node);
- Ray images and pins match the Ray this project runs (rules.py).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from orchestrator.cluster.rules import image_errors, ray_version, short, show
from orchestrator.errors import FieldError, OrchestratorError

# Ray's well-known ports: GCS, dashboard / Jobs API, Ray client, object manager, dashboard
# agent, Serve, metrics; plus the default worker port range.
RAY_PORTS: dict[int, str] = {
    6379: "GCS",
    8265: "dashboard / Jobs API",
    10001: "Ray client",
    8076: "object manager",
    52365: "dashboard agent",
    8000: "Serve",
    8080: "metrics",
}
RAY_WORKER_PORTS = (10002, 19999)
WORLD_CIDRS = {"0.0.0.0/0", "::/0"}

# GPUs per AWS instance type (the common ones); other p*/g* types must still declare a GPU.
AWS_GPUS: dict[str, tuple[int, str]] = {
    **{f"g5.{s}": (1, "A10G") for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g5.12xlarge": (4, "A10G"),
    "g5.24xlarge": (4, "A10G"),
    "g5.48xlarge": (8, "A10G"),
    **{f"g6.{s}": (1, "L4") for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g6.12xlarge": (4, "L4"),
    "g6.24xlarge": (4, "L4"),
    "g6.48xlarge": (8, "L4"),
    **{f"g4dn.{s}": (1, "T4") for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g4dn.12xlarge": (4, "T4"),
    "g4dn.metal": (8, "T4"),
    "p3.2xlarge": (1, "V100"),
    "p3.8xlarge": (4, "V100"),
    "p3.16xlarge": (8, "V100"),
    "p3dn.24xlarge": (8, "V100"),
    "p4d.24xlarge": (8, "A100"),
    "p4de.24xlarge": (8, "A100"),
    "p5.48xlarge": (8, "H100"),
    "p5e.48xlarge": (8, "H200"),
}
AWS_GPU_FAMILY = re.compile(r"^(p\d+[a-z]*|g\d+[a-z]*|gr\d+[a-z]*)\.")
# GCP machine types with GPUs built in.
GCP_G2_GPUS = {
    "g2-standard-4": 1,
    "g2-standard-8": 1,
    "g2-standard-12": 1,
    "g2-standard-16": 1,
    "g2-standard-24": 2,
    "g2-standard-32": 1,
    "g2-standard-48": 4,
    "g2-standard-96": 8,
}
GCP_A_SERIES = re.compile(r"^a[23]-(?:high|mega|ultra|edge)gpu-(\d+)g$")


@functools.lru_cache(maxsize=1)
def ray_schema() -> dict[str, Any]:
    """ray/autoscaler/ray-schema.json of the installed Ray (found without importing Ray)."""
    import importlib.util

    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        raise OrchestratorError("Ray is not installed: cannot read its cluster schema")
    root = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((root / "autoscaler" / "ray-schema.json").read_text())


def schema_errors(config: dict[str, Any]) -> list[FieldError]:
    """Ray's own cluster-config schema (the one `ray up` applies), every violation."""
    import jsonschema

    validator = jsonschema.Draft7Validator(ray_schema())
    out = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        out.append(
            FieldError(_path(err.absolute_path), f"Ray's cluster schema: {short(err.message)}")
        )
    return out


def launcher_errors(config: dict[str, Any]) -> list[FieldError]:
    """Ray's schema + this project's rules for a `ray up` config."""
    errors = schema_errors(config)
    provider = config.get("provider") if isinstance(config.get("provider"), dict) else {}
    ptype = provider.get("type", "")
    types = config.get("available_node_types")
    if not isinstance(types, dict) or not types:
        errors.append(
            FieldError(
                "available_node_types",
                "declare the node types (a head type and "
                "the worker pools), each with its resources",
            )
        )
        types = {}
    head = config.get("head_node_type")
    if head is None:
        errors.append(FieldError("head_node_type", "required: the name of the head's node type"))
    elif head not in types:
        errors.append(
            FieldError(
                "head_node_type",
                f"must be one of available_node_types ({', '.join(types) or 'none declared'})",
                str(head),
            )
        )
    if config.get("idle_timeout_minutes") is None:
        errors.append(
            FieldError("idle_timeout_minutes", "set it so idle (GPU) nodes are given back")
        )

    cluster_max = config.get("max_workers")
    sum_min = 0
    for name, nt in types.items():
        if not isinstance(nt, dict):
            continue
        where = f"available_node_types.{name}"
        res = nt.get("resources") if isinstance(nt.get("resources"), dict) else {}
        lo, hi = nt.get("min_workers", 0), nt.get("max_workers")
        if isinstance(lo, int):
            sum_min += lo if name != head else 0
        if name != head:
            if hi is None:
                errors.append(
                    FieldError(f"{where}.max_workers", "set an upper bound for this pool")
                )
            if "CPU" not in res:
                errors.append(
                    FieldError(
                        f"{where}.resources.CPU",
                        "declare the pool's CPUs so the autoscaler can plan from zero nodes",
                    )
                )
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            errors.append(
                FieldError(f"{where}.min_workers", f"must be <= max_workers ({hi})", str(lo))
            )
        if (
            isinstance(hi, int)
            and isinstance(cluster_max, int)
            and hi > cluster_max
            and name != head
        ):
            errors.append(
                FieldError(
                    f"{where}.max_workers",
                    f"exceeds the cluster's max_workers "
                    f"({cluster_max}); raise max_workers or lower this",
                    str(hi),
                )
            )
        errors += _gpu_errors(ptype, where, nt.get("node_config") or {}, res)
        docker = nt.get("docker") if isinstance(nt.get("docker"), dict) else {}
        if docker.get("worker_image"):
            errors += image_errors(f"{where}.docker.worker_image", docker["worker_image"])
        for i, cmd in enumerate(nt.get("worker_setup_commands") or []):
            errors += _command_errors(f"{where}.worker_setup_commands[{i}]", cmd)
    if isinstance(cluster_max, int) and sum_min > cluster_max:
        errors.append(
            FieldError(
                "max_workers",
                f"smaller than the sum of the pools' min_workers ({sum_min})",
                str(cluster_max),
            )
        )

    errors += _security_group_errors(provider)
    docker = config.get("docker") if isinstance(config.get("docker"), dict) else {}
    for key in ("image", "head_image", "worker_image"):
        if docker.get(key):
            errors += image_errors(f"docker.{key}", docker[key])

    command_keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    for key in command_keys:
        for i, cmd in enumerate(config.get(key) or []):
            errors += _command_errors(f"{key}[{i}]", cmd)
    errors += _token_errors(config)
    return errors


def _gpu_errors(ptype: str, where: str, node_config: dict, res: dict) -> list[FieldError]:
    declared = res.get("GPU")
    expected: int | None = None  # GPUs the machine type has; None: not a GPU machine type
    accel = None
    machine = ""
    if ptype == "aws":
        machine = str(node_config.get("InstanceType", ""))
        if machine in AWS_GPUS:
            expected, accel = AWS_GPUS[machine]
        elif AWS_GPU_FAMILY.match(machine):
            expected = -1  # a GPU family we have no count for: any GPU >= 1 is accepted
    elif ptype == "gcp":
        machine = str(node_config.get("machineType", ""))
        accels = node_config.get("guestAccelerators") or []
        if accels:
            expected = sum(int(a.get("acceleratorCount", 1)) for a in accels if isinstance(a, dict))
        elif machine in GCP_G2_GPUS:
            expected, accel = GCP_G2_GPUS[machine], "L4"
        elif m := GCP_A_SERIES.match(machine):
            expected, accel = int(m.group(1)), "A100" if machine.startswith("a2") else "H100"
        if expected:
            sched = node_config.get("scheduling")
            merged = {}
            for item in sched if isinstance(sched, list) else [sched or {}]:
                merged.update(item if isinstance(item, dict) else {})
            if merged.get("onHostMaintenance") != "TERMINATE":
                return _gpu_count(where, machine, declared, expected, accel, res) + [
                    FieldError(
                        f"{where}.node_config.scheduling.onHostMaintenance",
                        "GPU VMs cannot live-migrate: set TERMINATE",
                        show(merged.get("onHostMaintenance")),
                    )
                ]
    if expected is None:
        if declared:
            if ptype in ("aws", "gcp") and machine:
                return [
                    FieldError(
                        f"{where}.resources.GPU",
                        f"{machine} has no GPU; use a GPU machine type or drop GPU",
                        show(declared),
                    )
                ]
        return []
    return _gpu_count(where, machine, declared, expected, accel, res)


def _gpu_count(where, machine, declared, expected, accel, res) -> list[FieldError]:
    if not declared:
        n = f"{expected} " if expected and expected > 0 else ""
        return [
            FieldError(
                f"{where}.resources.GPU",
                f"GPU pool declares no GPU resources: {machine} has {n}GPU(s); "
                f"set resources.GPU so jobs asking for GPUs scale this pool",
            )
        ]
    if expected and expected > 0 and declared != expected:
        return [
            FieldError(f"{where}.resources.GPU", f"{machine} has {expected} GPU(s)", show(declared))
        ]
    errs = []
    for key in res:
        if key.startswith("accelerator_type:") and accel and key.split(":", 1)[1] != accel:
            errs.append(
                FieldError(
                    f"{where}.resources.{key}",
                    f"{machine} has {accel} GPUs (accelerator_type:{accel})",
                )
            )
    return errs


def _ports_hit(lo: int, hi: int) -> list[str]:
    hit = [f"{p} ({n})" for p, n in RAY_PORTS.items() if lo <= p <= hi]
    if lo <= RAY_WORKER_PORTS[1] and hi >= RAY_WORKER_PORTS[0]:
        hit.append(f"{RAY_WORKER_PORTS[0]}-{RAY_WORKER_PORTS[1]} (workers)")
    return hit


def _security_group_errors(provider: dict) -> list[FieldError]:
    sg = provider.get("security_group")
    if not isinstance(sg, dict):
        return []
    out = []
    for i, perm in enumerate(sg.get("IpPermissions") or []):
        if not isinstance(perm, dict):
            continue
        proto = str(perm.get("IpProtocol", "tcp"))
        if proto == "-1":
            lo, hi = 0, 65535
        else:
            lo = int(perm.get("FromPort", 0) or 0)
            hi = int(perm.get("ToPort", lo) or lo)
        hit = _ports_hit(lo, hi)
        if not hit:
            continue
        for key, cidr_key in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
            for j, rng in enumerate(perm.get(key) or []):
                cidr = rng.get(cidr_key) if isinstance(rng, dict) else None
                if cidr in WORLD_CIDRS:
                    out.append(
                        FieldError(
                            f"provider.security_group.IpPermissions[{i}].{key}[{j}].{cidr_key}",
                            f"opens Ray's ports {', '.join(hit)} to the internet; keep them closed "
                            f"and reach the head with `ray dashboard` / an SSH tunnel",
                            cidr,
                        )
                    )
    return out


_WORLD_BIND = re.compile(r"--dashboard-host[= ]+['\"]?(0\.0\.0\.0|::)['\"]?")
_RAY_PIN = re.compile(r"\bray(?:\[[^\]]*\])?\s*==\s*([0-9][0-9a-z.]*)")


def _command_errors(path: str, cmd: Any) -> list[FieldError]:
    if not isinstance(cmd, str):
        return []
    out = []
    if _WORLD_BIND.search(cmd):
        out.append(
            FieldError(
                path,
                "binds the dashboard / Jobs API to every interface; drop "
                "--dashboard-host (localhost) and use `ray dashboard CLUSTER.yaml`",
            )
        )
    if re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", cmd):
        out.append(FieldError(path, "turns Ray token authentication off; keep RAY_AUTH_MODE=token"))
    for m in _RAY_PIN.finditer(cmd):
        if m.group(1) != ray_version():
            out.append(
                FieldError(path, f"pins Ray {m.group(1)}; this project runs Ray {ray_version()}")
            )
    return out


def _token_errors(config: dict) -> list[FieldError]:
    starts = [c for c in (config.get("head_start_ray_commands") or []) if isinstance(c, str)]
    if not any("ray start" in c for c in starts):
        return []  # e.g. fake_multinode / KubeRay-managed: nothing here starts Ray
    out = []
    if not any(re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?token", c) for c in starts):
        out.append(
            FieldError(
                "head_start_ray_commands",
                "start Ray with token authentication: "
                "`export RAY_AUTH_MODE=token;` before `ray start --head`",
            )
        )
    workers = [c for c in (config.get("worker_start_ray_commands") or []) if isinstance(c, str)]
    if any("ray start" in c for c in workers) and not any(
        re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?token", c) for c in workers
    ):
        out.append(
            FieldError(
                "worker_start_ray_commands",
                "workers need RAY_AUTH_MODE=token too "
                "(`export RAY_AUTH_MODE=token;` before `ray start --address`)",
            )
        )
    mounts = config.get("file_mounts") or {}
    everything = " ".join(starts + workers + [str(c) for c in config.get("setup_commands") or []])
    if (
        not any(str(k).rstrip("/").endswith("auth_token") for k in mounts)
        and "RAY_AUTH_TOKEN" not in everything
    ):
        out.append(
            FieldError(
                "file_mounts",
                "the cluster's token must reach every node: mount "
                "`~/.ray/auth_token: ~/.ray/auth_token` (after `ray get-auth-token "
                "--generate`) or set RAY_AUTH_TOKEN_PATH in the start commands",
            )
        )
    return out


def _path(parts) -> str:
    """A jsonschema error's path as this project writes paths: `a.b[0].c`."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"
