"""Cluster YAMLs: find, read, validate and describe them (`ray up` configs, KubeRay objects).

    orch cluster validate                          # every YAML in ./cluster
    orch cluster validate cluster/gpu.yaml         # Ray's own schema + this project's rules
    orch cluster pools cluster/gpu.yaml            # the node types: resources, min-max workers
    ray up cluster/gpu.yaml && ray dashboard cluster/gpu.yaml

`validate_file(path)` returns every problem at once, each naming its path in the file
(`available_node_types.gpu_a10g.resources.GPU`, `head_start_ray_commands[1]`,
`RayCluster(orch-gpu).spec.workerGroupSpecs[0]...`): a `ray up` document goes through
ray_up.py, a RayCluster / RayJob through kuberay.py. `check_file(path)` raises them as one
SpecError. `node_types(path)` reads the pools of a `ray up` config (`orch cluster pools`, and
`orch run --cluster-config` through runtime.cluster_pools); `describe(path)` is the one-line
summary `orch cluster validate` prints for a file that passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.cluster.kuberay import kuberay_errors, object_path
from orchestrator.cluster.ray_up import launcher_errors
from orchestrator.cluster.rules import show
from orchestrator.errors import FieldError, SpecError

CLUSTER_DIR = "cluster"


def cluster_files(root: str | Path = CLUSTER_DIR) -> list[Path]:
    """The cluster YAMLs in a folder (default ./cluster), sorted."""
    return sorted(p for p in Path(root).glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


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
                        show(d),
                    )
                ],
                str(p),
            )
    return docs


def is_kubernetes(doc: dict[str, Any]) -> bool:
    """A Kubernetes object (KubeRay's RayCluster / RayJob, ...) rather than a `ray up` config."""
    return "apiVersion" in doc and "kind" in doc


@dataclass
class NodeType:
    """One pool of a `ray up` config, as the autoscaler sees it."""

    name: str
    resources: dict[str, float]
    min_workers: int = 0
    max_workers: int | None = None
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
            is_head=(name == head),
        )
    return out


def validate_file(path: str | Path) -> list[FieldError]:
    """Every problem in a cluster YAML (ray up config or KubeRay objects), each with its path."""
    docs = load_documents(path)
    errors: list[FieldError] = []
    multi = len(docs) > 1
    for i, doc in enumerate(docs):
        if is_kubernetes(doc):
            errors += kuberay_errors(doc, prefix=object_path(doc, i))
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
