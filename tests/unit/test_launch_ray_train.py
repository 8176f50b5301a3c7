"""orchestrator/launch/ray_train.py without starting Ray: the plan becomes Ray's own objects in
one place, which `orch run`, sweep trials and `orch plan` share."""

from __future__ import annotations

from pathlib import Path

from orchestrator.launch import describe, ray_train
from orchestrator.plan import plan
from orchestrator.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "mnist_mlp.yaml"


def _plan(tmp_path, *overrides, **kw):
    spec = load_spec(SPEC, [f"storage_path={tmp_path}", *overrides])
    return plan(spec, **kw)


def test_ray_objects_come_from_the_plan(tmp_path):
    p = _plan(tmp_path, "resources.workers=3", "checkpoint.keep=4", "failure.max_failures=2")
    objs = ray_train.ray_objects(p)
    assert objs["ScalingConfig"].num_workers == 3
    assert objs["ScalingConfig"].resources_per_worker == {"CPU": 1.0}
    assert objs["RunConfig"].name == p.run_name and objs["RunConfig"].storage_path == str(tmp_path)
    assert objs["RunConfig"].checkpoint_config is objs["CheckpointConfig"]
    assert objs["CheckpointConfig"].num_to_keep == 4
    assert objs["FailureConfig"].max_failures == 2
    assert objs["TorchConfig"].backend == "gloo"


def test_a_sweep_trial_keeps_one_checkpoint_more_from_the_same_builder(tmp_path):
    run = ray_train.ray_objects(_plan(tmp_path, "checkpoint.keep=2"))
    trial = ray_train.ray_objects(_plan(tmp_path, "checkpoint.keep=2", trial=True))
    assert run["CheckpointConfig"].num_to_keep == 2
    assert trial["CheckpointConfig"].num_to_keep == 3
    assert run["ScalingConfig"] == trial["ScalingConfig"]


def test_orch_plan_shows_what_the_launch_builds(tmp_path):
    p = _plan(tmp_path, "resources.workers=1", "failure.max_failures=3")
    shown = describe(p)
    assert shown["ScalingConfig"] == {
        "num_workers": 1,
        "use_gpu": False,
        "resources_per_worker": {"CPU": 1.0},
    }
    assert shown["FailureConfig"] == {"max_failures": 3}
    assert shown["RunConfig"] == {"name": "mnist-mlp", "storage_path": str(tmp_path)}
    assert "ray" in p.to_yaml(ray=shown)


def test_the_trainer_gets_the_plans_worker_config(tmp_path):
    from jobs import mnist_mlp

    p = _plan(tmp_path)
    trainer = ray_train.trainer(p, mnist_mlp.train_loop, keep_cleaner=False)
    assert trainer.train_loop_config == p.worker.to_dict()
    assert trainer.train_loop_config["run_dir"] == p.run_dir
