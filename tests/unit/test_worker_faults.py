"""ORCH_FAULTS parsing (orchestrator/worker/faults.py): one object for every run, or a list by
run."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import FaultConfigError
from orchestrator.worker import faults


def test_unset_object_and_list(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.from_env("a") is None
    monkeypatch.setenv(faults.ENV, json.dumps({"raise_at_step": 5, "times": 2}))
    assert faults.from_env("a") == faults.from_env("b") == {"raise_at_step": 5, "times": 2}
    both = [{"run": "a", "raise_at_step": 5, "times": 2}, {"run": "b", "raise_at_step": 7}]
    monkeypatch.setenv(faults.ENV, json.dumps(both))
    assert faults.from_env("a")["times"] == 2 and faults.from_env("b")["raise_at_step"] == 7
    assert faults.from_env("c") is None


@pytest.mark.parametrize(
    "raw, words",
    [
        ("{raise_at_step: 5}", "must be JSON"),
        ('{"times": 2}', "raise_at_step"),
        ('[{"raise_at_step": 5}]', "name its run"),
        ('[{"run": "a"}]', "raise_at_step"),
        ('{"raise_at_step": "12"}', "raise_at_step must be a whole number"),
        ('{"slow_after_step": 4, "sleep_s": "slow"}', "sleep_s must be a number of seconds"),
        ('{"slow_after_step": -1}', "slow_after_step must be a whole number >= 0"),
    ],
)
def test_bad_values_say_what_is_expected(monkeypatch, raw, words):
    monkeypatch.setenv(faults.ENV, raw)
    with pytest.raises(FaultConfigError, match=words):
        faults.from_env("a")


def test_launch_refuses_a_bad_value_before_anything_starts(monkeypatch, tmp_path):
    """`orch run` exits 2 with the message above; no run dir, no ledger row, no Ray."""
    from pathlib import Path

    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.spec import load_spec

    spec = Path(__file__).resolve().parents[2] / "jobs/mnist_mlp.yaml"
    monkeypatch.setenv(faults.ENV, '{"slow_after_step": 4, "sleep_s": "slow"}')
    with pytest.raises(FaultConfigError, match="sleep_s") as err:
        launch(plan(load_spec(spec, [f"storage_path={tmp_path}", "name=bad-faults"])))
    assert err.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_slow_fault_sleeps_on_rank_0_after_its_step(monkeypatch):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    cfg = {"slow_after_step": 3, "sleep_s": 0.5}
    for step in range(1, 6):
        faults.maybe_fail(cfg, step, rank=0, run_dir=None)
        faults.maybe_fail(cfg, step, rank=1, run_dir=None)
    assert slept == [0.5, 0.5]  # steps 4 and 5, rank 0 only
