"""Cluster configs: check them before `ray up` / `kubectl apply`, and the storage rule for runs
that span nodes.

    orch cluster validate                          # every YAML in ./cluster
    orch cluster validate cluster/gpu.yaml         # Ray's own schema + this project's rules
    orch cluster pools cluster/gpu.yaml            # the node types: resources, min-max workers
    ray up cluster/gpu.yaml && ray dashboard cluster/gpu.yaml

`validate_file(path)` returns every problem at once, each naming its path in the file
(`available_node_types.gpu_a10g.resources.GPU`, `head_start_ray_commands[1]`,
`RayCluster(orch-gpu).spec.workerGroupSpecs[0]...`). A `ray up` config is checked against
`ray/autoscaler/ray-schema.json` from the installed Ray, then against these rules:

- every worker pool declares its resources (CPU; GPU on GPU machine types, matching the count
  the machine type has) and min_workers <= max_workers <= the cluster's max_workers;
- head_node_type names a node type; idle_timeout_minutes is set (GPU pools scale back down);
- no 0.0.0.0/0 (or ::/0) rule reaches Ray's ports, the dashboard is not bound to 0.0.0.0,
  token authentication stays on (RAY_AUTH_MODE=token, with the token reaching every node);
- Ray images and pins match the Ray this project runs.

KubeRay files (RayCluster, RayJob) get the same rules in Kubernetes terms.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import FieldError, OrchestratorError, SpecError

CLUSTER_DIR = "cluster"

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


# ---------------------------------------------------------------------------------------------
# Reading


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """The YAML documents of a cluster file (a KubeRay file may hold several)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([FieldError("<file>", f"cluster file not found: {p}")], str(p))
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            [FieldError("<yaml>", f"invalid YAML{where}: {getattr(exc, 'problem', exc)}")], str(p)
        ) from None
    if not docs:
        raise SpecError([FieldError("<root>", "empty file: expected a cluster config")], str(p))
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise SpecError(
                [
                    FieldError(
                        f"[{i}]" if len(docs) > 1 else "<root>",
                        "expected a mapping of keys to values",
                        _show(d),
                    )
                ],
                str(p),
            )
    return docs


def is_kubernetes(doc: dict[str, Any]) -> bool:
    return "apiVersion" in doc and "kind" in doc


@dataclass
class NodeType:
    """One pool of a `ray up` config, as the autoscaler sees it."""

    name: str
    resources: dict[str, float]
    min_workers: int = 0
    max_workers: int | None = None
    node_config: dict[str, Any] = field(default_factory=dict)
    is_head: bool = False

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0))


def node_types(path: str | Path) -> dict[str, NodeType]:
    """Node types of a `ray up` cluster YAML (e.g. cluster/gpu.yaml), by name."""
    docs = load_documents(path)
    config = docs[0]
    if is_kubernetes(config):
        raise SpecError(
            [
                FieldError(
                    "<root>",
                    "expected a `ray up` config, got a Kubernetes "
                    f"{config.get('kind')} (node types come from available_node_types)",
                )
            ],
            str(path),
        )
    head = config.get("head_node_type")
    out = {}
    for name, nt in (config.get("available_node_types") or {}).items():
        out[name] = NodeType(
            name=name,
            resources={k: float(v) for k, v in (nt.get("resources") or {}).items()},
            min_workers=int(nt.get("min_workers", 0) or 0),
            max_workers=nt.get("max_workers"),
            node_config=dict(nt.get("node_config") or {}),
            is_head=(name == head),
        )
    return out


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


# ---------------------------------------------------------------------------------------------
# Validation


def validate_file(path: str | Path) -> list[FieldError]:
    """Every problem in a cluster YAML (ray up config or KubeRay objects), each with its path."""
    docs = load_documents(path)
    errors: list[FieldError] = []
    multi = len(docs) > 1
    for i, doc in enumerate(docs):
        if is_kubernetes(doc):
            errors += kuberay_errors(doc, prefix=_k8s_prefix(doc, i))
        else:
            errs = launcher_errors(doc)
            if multi:
                errs = [FieldError(f"[{i}].{e.path}", e.message, e.given) for e in errs]
            errors += errs
    return errors


def check_file(path: str | Path) -> list[dict[str, Any]]:
    """Raise SpecError listing every problem; return the documents when there are none."""
    errors = validate_file(path)
    if errors:
        raise SpecError(errors, str(path))
    return load_documents(path)


def cluster_files(root: str | Path = CLUSTER_DIR) -> list[Path]:
    return sorted(p for p in Path(root).glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


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
            FieldError(_path(err.absolute_path), f"Ray's cluster schema: {_short(err.message)}")
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
            errors += _image_errors(f"{where}.docker.worker_image", docker["worker_image"])
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
            errors += _image_errors(f"docker.{key}", docker[key])

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
    errors += _token_errors(config, ptype)
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
                        _show(merged.get("onHostMaintenance")),
                    )
                ]
    if expected is None:
        if declared:
            if ptype in ("aws", "gcp") and machine:
                return [
                    FieldError(
                        f"{where}.resources.GPU",
                        f"{machine} has no GPU; use a GPU machine type or drop GPU",
                        _show(declared),
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
            FieldError(
                f"{where}.resources.GPU", f"{machine} has {expected} GPU(s)", _show(declared)
            )
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
        if m.group(1) != _ray_version():
            out.append(
                FieldError(path, f"pins Ray {m.group(1)}; this project runs Ray {_ray_version()}")
            )
    return out


def _token_errors(config: dict, ptype: str) -> list[FieldError]:
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


def _image_errors(path: str, image: Any) -> list[FieldError]:
    image = str(image)
    m = re.match(r"^(?:docker\.io/)?rayproject/ray(?:-ml)?(?::(?P<tag>.+))?$", image)
    if not m:
        return []  # your own image: its Ray version is yours to keep in step
    tag = m.group("tag") or "latest"
    version = _ray_version()
    if not tag.startswith(version):
        return [
            FieldError(
                path,
                f"Ray image tag must start with this project's Ray version "
                f"{version} (e.g. rayproject/ray:{version}-py311-gpu)",
                image,
            )
        ]
    return []


@functools.lru_cache(maxsize=1)
def _ray_version() -> str:
    try:
        from importlib.metadata import version

        return version("ray")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        import ray

        return ray.__version__


# --- KubeRay ---------------------------------------------------------------------------------


def _k8s_prefix(doc: dict, i: int) -> str:
    name = (doc.get("metadata") or {}).get("name") or f"#{i}"
    return f"{doc.get('kind')}({name})"


def kuberay_errors(doc: dict[str, Any], prefix: str = "") -> list[FieldError]:
    """Project rules for a KubeRay RayCluster / RayJob (other kinds pass untouched)."""
    kind = doc.get("kind")
    errors: list[FieldError] = []
    if kind not in ("RayCluster", "RayJob"):
        return errors
    if not str(doc.get("apiVersion", "")).startswith("ray.io/"):
        errors.append(
            FieldError(f"{prefix}.apiVersion", "expected ray.io/v1", _show(doc.get("apiVersion")))
        )
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return errors + [FieldError(f"{prefix}.spec", "required")]
    if kind == "RayJob":
        if not spec.get("entrypoint"):
            errors.append(
                FieldError(
                    f"{prefix}.spec.entrypoint",
                    "required: the command to run, "
                    "e.g. `orch run jobs/mnist_mlp.yaml storage_path=s3://...`",
                )
            )
        sub = ((spec.get("submitterPodTemplate") or {}).get("spec") or {}).get("containers") or []
        auth_on = (spec.get("rayClusterSpec") or {}).get("authOptions", {}).get("mode") == "token"
        for i, c in enumerate(sub):
            if not auth_on and not _env_token(c):
                errors.append(
                    FieldError(
                        f"{prefix}.spec.submitterPodTemplate.spec.containers[{i}].env",
                        "the submitter calls the Jobs API: give it RAY_AUTH_MODE=token and RAY_AUTH_TOKEN",
                    )
                )
        if "rayClusterSpec" in spec:
            errors += _raycluster_spec_errors(
                spec["rayClusterSpec"], f"{prefix}.spec.rayClusterSpec"
            )
        elif not spec.get("clusterSelector"):
            errors.append(
                FieldError(
                    f"{prefix}.spec.rayClusterSpec",
                    "required (or clusterSelector to use a running RayCluster)",
                )
            )
        return errors
    return errors + _raycluster_spec_errors(spec, f"{prefix}.spec")


def _env_token(container: dict) -> bool:
    env = {e.get("name"): e for e in container.get("env") or [] if isinstance(e, dict)}
    mode = (env.get("RAY_AUTH_MODE") or {}).get("value")
    return mode == "token" and any(k in env for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))


def _raycluster_spec_errors(spec: Any, where: str) -> list[FieldError]:
    if not isinstance(spec, dict):
        return [FieldError(where, "expected a RayCluster spec (a mapping)")]
    errors: list[FieldError] = []
    version = _ray_version()
    if str(spec.get("rayVersion", "")) != version:
        errors.append(
            FieldError(
                f"{where}.rayVersion",
                f"must be this project's Ray version {version}",
                _show(spec.get("rayVersion")),
            )
        )
    auth_on = (spec.get("authOptions") or {}).get("mode") == "token"
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        return errors + [FieldError(f"{where}.headGroupSpec", "required")]
    if head.get("serviceType") in ("LoadBalancer", "NodePort"):
        errors.append(
            FieldError(
                f"{where}.headGroupSpec.serviceType",
                "exposes the dashboard / Jobs API and GCS outside the cluster; use "
                "ClusterIP and `kubectl port-forward`",
                head["serviceType"],
            )
        )
    groups = [(f"{where}.headGroupSpec", head)]
    autoscale_needed = False
    for i, g in enumerate(spec.get("workerGroupSpecs") or []):
        gw = f"{where}.workerGroupSpecs[{i}]"
        if not isinstance(g, dict):
            errors.append(FieldError(gw, "expected a worker group (a mapping)"))
            continue
        groups.append((gw, g))
        lo, hi, n = g.get("minReplicas", 0), g.get("maxReplicas"), g.get("replicas")
        if hi is None:
            errors.append(FieldError(f"{gw}.maxReplicas", "set an upper bound for this group"))
        elif isinstance(lo, int) and lo > hi:
            errors.append(
                FieldError(f"{gw}.minReplicas", f"must be <= maxReplicas ({hi})", str(lo))
            )
        elif isinstance(n, int) and not (lo <= n <= hi):
            errors.append(
                FieldError(
                    f"{gw}.replicas", f"must lie in minReplicas..maxReplicas ({lo}..{hi})", str(n)
                )
            )
        if isinstance(hi, int) and isinstance(lo, int) and hi > lo:
            autoscale_needed = True
        errors += _k8s_gpu_errors(gw, g)
    if autoscale_needed and not spec.get("enableInTreeAutoscaling"):
        errors.append(
            FieldError(
                f"{where}.enableInTreeAutoscaling",
                "worker groups have minReplicas < maxReplicas but nothing scales "
                "them: set enableInTreeAutoscaling: true",
            )
        )
    for gw, g in groups:
        containers = ((g.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            errors.append(
                FieldError(f"{gw}.template.spec.containers", "required: the Ray container")
            )
        for j, c in enumerate(containers):
            cw = f"{gw}.template.spec.containers[{j}]"
            if not isinstance(c, dict):
                continue
            if c.get("image"):
                errors += _image_errors(f"{cw}.image", c["image"])
            if not auth_on and not _env_token(c):
                errors.append(
                    FieldError(
                        f"{cw}.env",
                        "token authentication is off: set "
                        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from a Secret), or "
                        "spec.authOptions.mode: token (KubeRay >= 1.5.1)",
                    )
                )
            env = {e.get("name"): e.get("value") for e in c.get("env") or [] if isinstance(e, dict)}
            if env.get("RAY_AUTH_MODE") == "disabled":
                errors.append(
                    FieldError(f"{cw}.env", "RAY_AUTH_MODE=disabled turns token authentication off")
                )
    return errors


def _k8s_gpu_errors(gw: str, g: dict) -> list[FieldError]:
    pod = (g.get("template") or {}).get("spec") or {}
    wants_gpu = (
        "gpu" in str(g.get("groupName", "")).lower()
        or any(
            "gpu" in str(k).lower() or "accelerator" in str(k).lower()
            for k in (pod.get("nodeSelector") or {})
        )
        or any("gpu" in str((t or {}).get("key", "")).lower() for t in pod.get("tolerations") or [])
    )
    errors = []
    has_gpu = False
    for j, c in enumerate(pod.get("containers") or []):
        if not isinstance(c, dict):
            continue
        res = c.get("resources") or {}
        lim = (res.get("limits") or {}).get("nvidia.com/gpu")
        req = (res.get("requests") or {}).get("nvidia.com/gpu")
        cw = f"{gw}.template.spec.containers[{j}].resources"
        if req is not None and str(req) != str(lim):
            errors.append(
                FieldError(
                    f"{cw}.limits.nvidia.com/gpu",
                    f"must equal requests.nvidia.com/gpu ({req}): Kubernetes "
                    "schedules GPUs by limits",
                    _show(lim),
                )
            )
        if lim is not None:
            has_gpu = True
            num = (g.get("rayStartParams") or {}).get("num-gpus")
            if num is not None and str(num) != str(lim):
                errors.append(
                    FieldError(
                        f"{gw}.rayStartParams.num-gpus",
                        f"disagrees with limits.nvidia.com/gpu ({lim})",
                        str(num),
                    )
                )
    if wants_gpu and not has_gpu:
        errors.append(
            FieldError(
                f"{gw}.template.spec.containers[0].resources.limits",
                "GPU group declares no GPU resources: set nvidia.com/gpu in limits "
                "(KubeRay gives Ray that many GPUs)",
            )
        )
    return errors


# ---------------------------------------------------------------------------------------------
# Helpers


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any) -> str:
    return _short(json.dumps(value, default=str), 120)


def describe(path: str | Path) -> str:
    """One line per object: what the file is and its pools."""
    lines = []
    for doc in load_documents(path):
        if is_kubernetes(doc):
            spec = doc.get("spec") or {}
            cs = spec.get("rayClusterSpec", spec) if doc.get("kind") == "RayJob" else spec
            groups = []
            for g in (cs or {}).get("workerGroupSpecs") or []:
                c = (((g.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
                gpu = ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
                groups.append(
                    f"{g.get('groupName')} {g.get('minReplicas', 0)}-{g.get('maxReplicas')}"
                    + (f" ({gpu} GPU)" if gpu else "")
                )
            lines.append(
                f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name')}: "
                + (", ".join(groups) or "no worker groups")
            )
        else:
            pools = []
            head = doc.get("head_node_type")
            for name, nt in (doc.get("available_node_types") or {}).items():
                if name == head:
                    continue
                gpu = (nt.get("resources") or {}).get("GPU")
                pools.append(
                    f"{name} {nt.get('min_workers', 0)}-{nt.get('max_workers')}"
                    + (f" ({gpu} GPU)" if gpu else "")
                )
            lines.append(
                f"ray up config, {(doc.get('provider') or {}).get('type')}: "
                + (", ".join(pools) or "no worker pools")
            )
    return "; ".join(lines)
