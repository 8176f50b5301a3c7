"""A sweep trial of one CPU worker trains in its Tune trial's own process (sweep.in_process):
which sweeps qualify (and why the others do not), and what a workload's loop hands the trial
when it runs there: every logged row, every checkpoint (complete, in the trial's run dir) and
the final report, with nothing printed. No Ray is started: the trial's reporter is a list."""

from __future__ import annotations

import json

import pytest

from orchestrator import rundir
from orchestrator.plan import plan
from orchestrator.spec import load_spec_text
from orchestrator.sweep.spec import in_process_reason, validate_sweep
from orchestrator.sweep.tune import trial_resources, trial_retries

BASE = """
name: s
workload: mnist_mlp
resources: {workers: 1, cpus_per_worker: 1}
train: {epochs: 1, max_steps: 20, log_every: 5, batch_size: 32, hidden: [16]}
checkpoint: {every_steps: 10}
sweep:
  metric: loss
  mode: min
  num_samples: 2
  search_space:
    train.lr: {loguniform: [1.0e-4, 1.0e-1]}
"""


def reason(*overrides: str, kind: str = "train", queued: bool = False) -> str | None:
    spec = load_spec_text(BASE, list(overrides))
    return in_process_reason(validate_sweep(spec), spec, kind, queued=queued)


def test_a_one_cpu_worker_ddp_trial_runs_in_process():
    assert reason() is None
    assert reason("sweep.resources.workers=1") is None


@pytest.mark.parametrize(
    "overrides,kind,queued,why",
    [
        (["sweep.in_process=false"], "train", False, "sweep.in_process is false"),
        (["resources.workers=2"], "train", False, "a trial has 2 worker(s)"),
        (["sweep.resources.workers=2"], "train", False, "a trial has 2 worker(s)"),
        (["strategy=deepspeed"], "train", False, "strategy deepspeed"),
        (
            ["sweep.search_space.strategy={choice: [ddp, fsdp]}"],
            "train",
            False,
            "strategy is swept",
        ),
        ([], "rllib", False, "is not a train_loop module"),
        ([], "train", True, "the sweep runs through the queue"),
    ],
)
def test_other_sweeps_go_through_ray_train_and_say_why(overrides, kind, queued, why):
    got = reason(*overrides, kind=kind, queued=queued)
    assert got is not None and why in got, got


def test_an_in_process_trial_reserves_its_workers_cpus():
    assert trial_resources("train", 1, {"CPU": 2.0}, in_process=True)["cpu"] == 2.0
    assert trial_resources("train", 1, {"CPU": 2.0})["cpu"] == 0  # its Train worker holds them


def test_the_loop_hands_rows_and_checkpoints_to_the_trial_and_prints_nothing(tmp_path, capsys):
    import ray

    ray_before = ray.is_initialized()

    from orchestrator.spec import validate_spec
    from orchestrator.worker import session
    from orchestrator.worker.entry import train_loop

    spec = load_spec_text(BASE, [f"storage_path={tmp_path}"])
    data = spec.model_dump(mode="json")
    data.pop("sweep")
    p = plan(validate_spec(data), run_name="t1", trial=True)
    got: list[tuple[dict, str | None]] = []
    with session.reporting_to(lambda row, path: got.append((row, path))):
        train_loop(p.worker.to_dict())
    assert session._trial_reporter is None  # the next trial in this process starts clean

    ckpts = [(r, path) for r, path in got if path is not None]
    assert [r["step"] for r, _ in got] == [5, 10, 15, 20]  # a checkpoint's row is its report
    assert [r["step"] for r, _ in ckpts] == [10, 20]
    assert ckpts[-1][0].get("done") == 1  # the final report, as a Train run's is
    for row, path in ckpts:
        assert path == rundir.join(p.run_dir, rundir.checkpoint_name(row["step"]))
        assert rundir.is_complete(path), path
    # The run dir has the rows too (orch report reads them), and stdout none of them.
    assert [r["step"] for r in rundir.read_metrics(p.run_dir)] == [5, 10, 15, 20]
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    # A second trial in the same process resumes from the first's checkpoint (a Tune restore).
    p2 = plan(validate_spec(data), run_name="t2", trial=True, resume_from=ckpts[0][1])
    again: list[tuple[dict, str | None]] = []
    with session.reporting_to(lambda row, path: again.append((row, path))):
        train_loop(p2.worker.to_dict())
    assert [r["step"] for r, _ in again] == [15, 20]
    state = json.loads((rundir.local_copy(again[-1][1]) / "state.json").read_text())
    assert state["step"] == 20 and state["final"]
    assert ray.is_initialized() == ray_before  # no Ray of its own was started on the way
    # Restarted with no checkpoint from Tune (lost before Tune took the report): the newest
    # complete one its earlier attempt left in the trial's run dir; none in a fresh dir.
    from orchestrator.sweep.trial import _left_by_an_earlier_attempt

    assert _left_by_an_earlier_attempt(p.run_dir) == ckpts[-1][1]
    (rundir.local_copy(ckpts[-1][1]) / rundir.COMPLETE_MARKER).unlink()  # half-written
    assert _left_by_an_earlier_attempt(p.run_dir) == ckpts[0][1]
    assert _left_by_an_earlier_attempt(str(tmp_path / "never-ran")) is None


@pytest.mark.parametrize(
    "sweep_retries, run_restarts, in_process, want",
    [
        (0, 0, True, 0),
        (0, 2, True, 2),  # a lost node: the run's restarts, spent as Tune's trial restarts
        (1, 2, True, 3),
        (1, -1, True, -1),
        (1, 2, False, 1),  # through Train the worker group restarts inside the trial
    ],
)
def test_an_in_process_trial_keeps_the_runs_restart_budget(
    sweep_retries, run_restarts, in_process, want
):
    spec = load_spec_text(BASE, [f"sweep.max_failures={sweep_retries}"])
    assert trial_retries(validate_sweep(spec), run_restarts, in_process) == want
