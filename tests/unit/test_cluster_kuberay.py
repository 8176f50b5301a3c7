"""orchestrator.cluster.kuberay: known-bad copies of cluster/kuberay.yaml (a RayCluster and a
RayJob) fail with the expected messages at the expected paths. No Ray runtime."""

from __future__ import annotations

import pytest

from tests.unit.cluster_fixtures import DEL, assert_problem, kuberay, mutated

RC = "RayCluster(orch-gpu).spec"
W0 = "workerGroupSpecs.0.template.spec.containers.0"

BAD = [
    (
        "kuberay LoadBalancer head",
        mutated(kuberay, ("0:spec.headGroupSpec.serviceType", "LoadBalancer")),
        f"{RC}.headGroupSpec.serviceType",
        "use ClusterIP and `kubectl port-forward`",
    ),
    (
        "kuberay GPU group without GPU",
        mutated(kuberay, (f"0:spec.{W0}.resources", {"limits": {"cpu": "7"}})),
        f"{RC}.workerGroupSpecs[0].template.spec.containers[0].resources.limits",
        "GPU group declares no GPU resources",
    ),
    (
        "kuberay GPU requests != limits",
        mutated(
            kuberay,
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
        mutated(kuberay, (f"0:spec.{W0}.env", [])),
        f"{RC}.workerGroupSpecs[0].template.spec.containers[0].env",
        "token authentication is off",
    ),
    (
        "kuberay old rayVersion",
        mutated(kuberay, ("0:spec.rayVersion", "2.9.0")),
        f"{RC}.rayVersion",
        "must be this project's Ray version",
    ),
    (
        "kuberay no autoscaler",
        mutated(kuberay, ("0:spec.enableInTreeAutoscaling", False)),
        f"{RC}.enableInTreeAutoscaling",
        "nothing scales them",
    ),
    (
        "kuberay min over max",
        mutated(kuberay, ("0:spec.workerGroupSpecs.1.minReplicas", 5)),
        f"{RC}.workerGroupSpecs[1].minReplicas",
        "must be <= maxReplicas (2)",
    ),
    (
        "rayjob submitter without token",
        mutated(kuberay, ("1:spec.submitterPodTemplate.spec.containers.0.env", [])),
        "RayJob(orch-mnist-gpu).spec.submitterPodTemplate.spec.containers[0].env",
        "the submitter calls the Jobs API",
    ),
    (
        "rayjob without entrypoint",
        mutated(kuberay, ("1:spec.entrypoint", DEL)),
        "RayJob(orch-mnist-gpu).spec.entrypoint",
        "required",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_known_bad_copies_fail_with_expected_messages(case, tmp_path):
    _, make, path, message = case
    assert_problem(make(), tmp_path, path, message)
