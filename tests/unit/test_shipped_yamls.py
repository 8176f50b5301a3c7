"""Every YAML the project ships is valid: each jobs/*.yaml as a job spec (its workload's
arguments, and its sweep: section where it has one), each cluster/*.yaml by Ray's cluster schema
and the project's rules. A new file is checked the moment it is added."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cluster import config
from orchestrator.spec import load_spec
from orchestrator.sweep.spec import validate_sweep

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
CLUSTERS = config.cluster_files(ROOT / "cluster")


def test_there_are_files_to_check():
    assert {p.name for p in JOBS} >= {
        "mnist_mlp.yaml",
        "cartpole_dqn.yaml",
        "t5_translation.yaml",
        "resnet_images.yaml",
        "mnist_mlp_sweep.yaml",
    }
    assert {p.name for p in CLUSTERS} >= {
        "gpu.yaml",
        "gcp-gpu.yaml",
        "kuberay.yaml",
        "local-fake.yaml",
    }


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_every_job_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.name and spec.workload
    if spec.sweep:
        validate_sweep(spec)


@pytest.mark.parametrize("path", CLUSTERS, ids=[p.name for p in CLUSTERS])
def test_every_cluster_yaml_passes(path):
    assert config.validate_file(path) == []
