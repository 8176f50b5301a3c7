"""plan() is pure and refuses to resume a run of another model shape. No Ray."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.errors import CheckpointError
from orchestrator.plan import plan
from orchestrator.spec import dump_yaml, load_spec


def test_plan_resolves_and_creates_nothing(tmp_path):
    spec = load_spec("jobs/mnist_mlp.yaml", [f"storage_path={tmp_path}/runs"])
    p = plan(spec)
    assert p.num_workers == 2 and p.backend == "gloo" and not p.use_gpu
    assert p.run_dir == f"{tmp_path}/runs/mnist-mlp"
    assert p.resumes_from is None
    assert not (tmp_path / "runs").exists()
    cfg = p.worker.to_dict()
    assert cfg["train"]["epochs"] == 15 and cfg["strategy"] in ("ddp", "fsdp", "deepspeed")
    assert yaml.safe_load(p.to_yaml())["run_name"] == "mnist-mlp"


def test_gpu_plan_uses_nccl(tmp_path):
    spec = load_spec(
        "jobs/mnist_mlp.yaml", ["resources.gpus_per_worker=1", f"storage_path={tmp_path}"]
    )
    p = plan(spec)
    assert p.use_gpu and p.backend == "nccl" and p.resources_per_worker["GPU"] == 1


def _fake_run(run_dir, spec):
    ck = run_dir / "checkpoint_000010"
    ck.mkdir(parents=True)
    (ck / "_COMPLETE").write_text("{}")
    (ck / "state.json").write_text('{"step": 10}')
    (run_dir / "spec.resolved.yaml").write_text(dump_yaml(spec))


def test_resume_point_found_and_other_shape_refused(tmp_path):
    spec = load_spec("jobs/mnist_mlp.yaml", [f"storage_path={tmp_path}"])
    _fake_run(tmp_path / "mnist-mlp", spec)
    assert plan(spec).resumes_from.endswith("checkpoint_000010")
    other = load_spec("jobs/mnist_mlp.yaml", [f"storage_path={tmp_path}", "train.hidden=[64]"])
    with pytest.raises(CheckpointError, match="train.hidden"):
        plan(other)
    # a fresh run name is always allowed
    assert plan(other, fresh=True).resumes_from is None


def test_incomplete_checkpoint_is_not_a_resume_point(tmp_path):
    spec = load_spec("jobs/mnist_mlp.yaml", [f"storage_path={tmp_path}"])
    _fake_run(tmp_path / "mnist-mlp", spec)
    half = tmp_path / "mnist-mlp" / "checkpoint_000020"
    half.mkdir()
    (half / "model.pt").write_bytes(b"partial")
    assert plan(spec).resumes_from.endswith("checkpoint_000010")
