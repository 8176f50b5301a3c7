"""The rules for KubeRay objects (RayCluster, RayJob): the `ray up` rules in Kubernetes terms.

    orch cluster validate cluster/kuberay.yaml     # config.validate_file -> kuberay_errors here
    kubectl apply -f cluster/kuberay.yaml

`kuberay_errors(doc, prefix)` returns every problem of one object, each path starting with
`object_path(doc, i)`, e.g. `RayCluster(orch-gpu).spec.workerGroupSpecs[0]...`:

- GPU groups set nvidia.com/gpu in limits (equal to requests, matching rayStartParams.num-gpus);
- minReplicas <= replicas <= maxReplicas, with enableInTreeAutoscaling when a group can grow;
- rayVersion and rayproject/ray image tags equal this project's Ray (rules.py);
- no LoadBalancer / NodePort head Service; token auth on every Ray container and the RayJob
  submitter (or spec.authOptions.mode: token).

Other kinds (a Secret, a ConfigMap, ...) pass untouched.
"""

from __future__ import annotations

from typing import Any

from orchestrator.cluster.rules import image_errors, ray_version, show
from orchestrator.errors import FieldError


def object_path(doc: dict, i: int) -> str:
    """How paths in a Kubernetes object start: `Kind(name)`, or `Kind(#i)` without a name."""
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
            FieldError(f"{prefix}.apiVersion", "expected ray.io/v1", show(doc.get("apiVersion")))
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
                        "the submitter calls the Jobs API: give it RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN",
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
    version = ray_version()
    if str(spec.get("rayVersion", "")) != version:
        errors.append(
            FieldError(
                f"{where}.rayVersion",
                f"must be this project's Ray version {version}",
                show(spec.get("rayVersion")),
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
                errors += image_errors(f"{cw}.image", c["image"])
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
                    show(lim),
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
