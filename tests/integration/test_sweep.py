"""Sweeps on real local Ray: MNIST MLP over the learning rate, ASHA, kill + --resume.

Budget: tiny trials (1 worker, 60-80 steps of a 32-unit MLP); about 2-3 minutes together on
an idle 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import ledger

ROOT = Path(__file__).resolve().parents[2]

SPEC = {
    "name": "lr-sweep",
    "workload": "mnist_mlp",
    "resources": {"workers": 1, "cpus_per_worker": 1},
    "train": {"epochs": 1, "max_steps": 60, "batch_size": 32, "hidden": [32], "log_every": 10},
    "checkpoint": {"every_steps": 30, "keep": 2},
    "sweep": {
        "metric": "loss",
        "mode": "min",
        "num_samples": 1,
        "max_concurrent": 2,
        "algorithm": "grid",
        # Good rates first: asynchronous ASHA compares a trial with those that reached the
        # same rung before it, so the poor ones (1e-6, 1e-7) meet the good ones' results.
        "search_space": {"train.lr": {"grid": [3e-3, 1e-3, 1e-6, 1e-7]}},
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2, "max_t": 6},
    },
}


def trial_rows(storage, sweep_id):
    return [
        r
        for r in ledger.read_events(storage).to_pylist()
        if r["kind"] == "trial" and r["sweep_id"] == sweep_id
    ]


def _name(row) -> str:
    """The trial's name (<sweep_id>-<n>-<hash>): its trials/<name>/ Train runs."""
    extra = json.loads(row["extra"])
    assert row["run_name"] == extra["trial_name"]
    return extra["trial_name"]


def terminal_by_trial(rows):
    """Terminal rows per trial, by the trial's name."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        tid = _name(r)
        out.setdefault(tid, [])
        if r["status"] in ("SUCCEEDED", "STOPPED", "FAILED"):
            out[tid].append(r)
    return out


@pytest.mark.timeout(1800)  # minutes on an idle machine; generous for a shared, loaded one
def test_four_trial_lr_sweep_with_asha(ray_local, tmp_runs):
    from rich.console import Console

    from orchestrator.cli.sweep import print_sweep_summary
    from orchestrator.spec import validate_spec
    from orchestrator.sweep.driver import run_sweep

    spec = validate_spec({**SPEC, "storage_path": str(tmp_runs)})
    t0 = time.time()
    summary = run_sweep(spec, sweep_id="lr-asha", console=Console(), live_every_s=1e9)
    wall = time.time() - t0
    print_sweep_summary(summary, Console())
    print(f"4-trial ASHA sweep: {wall:.1f} s")
    assert summary["status"] == "SUCCEEDED", summary.get("error")
    trials = summary["trials"]
    assert len(trials) == 4
    # The best trial is one of the two sane learning rates, with a real loss and checkpoint.
    assert summary["best_config"]["train.lr"] in (3e-3, 1e-3)
    assert summary["best_metric"] < 2.0
    assert Path(summary["best_checkpoint"]).is_dir()
    assert Path(summary["plot"]).stat().st_size > 1000
    # ASHA stopped at least one poor trial early: fewer reports than a full trial (6), and
    # never reaching the last step; a completed trial reports finished=1 at step 60.
    full = [t for t in trials if t["finished"]]
    early = [t for t in trials if not t["finished"]]
    assert full and all(t["step"] == 60 and t["reports"] == 6 for t in full)
    assert early, f"ASHA stopped nothing: {trials}"
    assert all(t["reports"] < 6 and t["step"] < 60 for t in early)
    # A poor rate (1e-6 or 1e-7, loss still ~2.3) is among them; the best trial ran to the end.
    # (Asynchronous ASHA may also stop 1e-3 when 3e-3 reached the rung first with a lower loss.)
    assert any(t["config"]["train.lr"] <= 1e-6 for t in early)
    assert summary["best_trial"] in {t["trial"] for t in full}
    assert summary["best_trial_id"] in {t["trial_id"] for t in full}
    # Trials carry the sweep's name: Tune's folders and the Train runs' trials/<name>/.
    assert all(t["trial"].startswith("lr-asha-") for t in trials)
    assert all((tmp_runs / "lr-asha" / "trials" / t["trial"]).is_dir() for t in trials)
    # Every trial is one ledger row chain tied to the sweep, ending once.
    ends = terminal_by_trial(trial_rows(tmp_runs, "lr-asha"))
    assert len(ends) == 4 and all(len(v) == 1 for v in ends.values())
    # An end row carries its trial's start (orch runs shows the latest row: start and end).
    assert all(v[0]["start_time"] and v[0]["start_time"] < v[0]["end_time"] for v in ends.values())
    stopped = [v[0] for v in ends.values() if v[0]["status"] == "STOPPED"]
    assert len(stopped) == len(early) and all(
        json.loads(r["extra"])["early_stopped"] for r in stopped
    )
    sweep_rows = [r for r in ledger.read_events(tmp_runs).to_pylist() if r["kind"] == "sweep"]
    assert [r["status"] for r in sweep_rows] == ["RUNNING", "SUCCEEDED"]
    assert json.loads(sweep_rows[-1]["extra"])["best_config"] == summary["best_config"]


def _latest_checkpoint_step(trials_dir, name) -> int:
    """Step of the trial's newest checkpoint directory (its Train runs included), 0 if none."""
    steps = [
        int(p.name.rsplit("_", 1)[1])
        for p in trials_dir.glob(f"{name}*/checkpoint_*")
        if p.name.rsplit("_", 1)[1].isdigit()
    ]
    return max(steps, default=0)


def _ledger_ends(storage, sweep_id):
    try:
        return terminal_by_trial(trial_rows(storage, sweep_id))
    except Exception:  # a row being renamed into place
        return {}


# 3 trials, 2 at a time: the first to finish frees a slot for the third while the other is
# mid-way, so the kill always finds one trial done and one with a checkpoint.
TRIALS = 3


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("in_process", [False, True], ids=["train-runs", "in-process"])
def test_killed_sweep_resumes_and_runs_every_trial_once(ray_local, tmp_path, in_process):
    # Both sweep commands join the session's Ray (--address), as on a cluster: killing the
    # driver ends its Ray job, whose trial actors Ray then stops. (An embedded Ray per command
    # cost ~7 s to start and stop, and its agents outlived a SIGKILLed driver by a minute.)
    # Trials run as Ray Train runs, and in their Tune trial's own process (the default for one
    # CPU worker), which trains 80 steps in well under a second: there the driver's ORCH_FAULTS
    # (shipped to the trials) makes each step 0.1 s, so the kill lands mid-way.
    from orchestrator import runtime

    storage = tmp_path / "runs"
    spec = json.loads(json.dumps(SPEC))
    spec["storage_path"] = str(storage)
    spec["name"] = "resume-me"
    spec["train"]["max_steps"] = 80
    spec["checkpoint"]["every_steps"] = 10  # every report carries a checkpoint
    spec["sweep"].update(
        algorithm="random",
        seed=7,
        num_samples=TRIALS,
        scheduler="none",
        search_space={"train.lr": {"loguniform": [1e-4, 3e-3]}},
        in_process=in_process,
    )
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep_id = "resume-me-sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    if in_process:
        env["ORCH_FAULTS"] = json.dumps({"slow_after_step": 0, "sleep_s": 0.1})
    orch = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "sweep",
        str(path),
        "--name",
        sweep_id,
        "--address",
        runtime.local_address(),
    ]
    before = _live_actors()
    log1 = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(
        orch, cwd=ROOT, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True
    )
    killed_at = None
    try:
        deadline = time.time() + 900
        # Kill the driver (its Ray job) once a trial has finished and another has
        # reported a checkpoint but is at most 50 of its 80 steps in (a trial nearer its end
        # could finish between this look and the kill).
        while time.time() < deadline and driver.poll() is None:
            ends = _ledger_ends(storage, sweep_id)
            done = {t for t, v in ends.items() if v}
            running = [
                t
                for t in ends
                if t not in done
                and 0 < _latest_checkpoint_step(storage / sweep_id / "trials", t) <= 50
            ]
            if done and running:
                killed_at = {"done": done, "running": set(running), "time": time.time()}
                break
            time.sleep(0.5)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
        log1.close()
    assert killed_at, (
        "the sweep ended before it could be killed mid-way:\n"
        + (tmp_path / "first.log").read_text()[-3000:]
    )
    rows_before = {r["event_id"] for r in trial_rows(storage, sweep_id)}
    # Mid-way when the kill landed: still no terminal row now that the driver is gone.
    killed_at["running"] -= {t for t, v in _ledger_ends(storage, sweep_id).items() if v}
    assert killed_at["running"], "every trial seen mid-way had finished before the kill"
    sweep_rows = [r for r in ledger.read_events(storage).to_pylist() if r["kind"] == "sweep"]
    assert [r["status"] for r in sweep_rows] == ["RUNNING"]  # killed: no terminal row

    resumed = subprocess.run(
        orch + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert ("in its Tune trial's own process" in resumed.stdout) == in_process

    rows = trial_rows(storage, sweep_id)
    ends = terminal_by_trial(rows)
    assert len(ends) == TRIALS, ends.keys()
    # Every trial ended exactly once, and successfully.
    assert all(len(v) == 1 and v[0]["status"] == "SUCCEEDED" for v in ends.values()), ends
    # Trials that had finished before the kill got no new rows (not run again).
    after = [r for r in rows if r["event_id"] not in rows_before]
    rerun = {_name(r) for r in after} & killed_at["done"]
    assert not rerun, f"finished trials ran again: {rerun}"
    # Unfinished trials continued: no step was trained from scratch twice. Each trial's
    # Train runs (name, name-r1, ...) log step 10 exactly once between them.
    for tid in ends:
        steps = []
        for mf in (storage / sweep_id / "trials").glob(f"{tid}*/metrics.jsonl"):
            steps += [
                json.loads(line)["step"] for line in mf.read_text().splitlines() if line.strip()
            ]
        assert steps.count(10) == 1, (tid, sorted(steps))
        assert max(steps) == 80
    for tid in killed_at["running"]:
        starts = [
            json.loads(r["extra"]) for r in rows if r["status"] == "RUNNING" and _name(r) == tid
        ]
        assert [s["attempt"] for s in starts] == [1, 2]
    sweep_rows = [r for r in ledger.read_events(storage).to_pylist() if r["kind"] == "sweep"]
    assert sweep_rows[-1]["status"] == "SUCCEEDED"
    best = json.loads((storage / sweep_id / "best.json").read_text())
    assert len(best["trials"]) == TRIALS and best["best_config"]["train.lr"] > 0
    # Neither sweep left an actor (trial, Train controller or worker) on the shared Ray; Ray
    # ends a finished job's actors asynchronously, so allow it a little while.
    deadline = time.time() + 30
    while (left := _new_actors(before)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"still on the session's Ray after both sweeps: {left}"


def _live_actors():
    from ray.util.state import list_actors

    from orchestrator import runtime

    return {
        a.actor_id: a.class_name
        for a in list_actors(
            address=runtime.local_address(), filters=[("state", "!=", "DEAD")], limit=10000
        )
    }


def _new_actors(before):
    # Not counted: the cluster-wide AutoscalingCoordinator, one detached actor that Ray Train
    # v2 / Ray Data create once per cluster (get_if_exists) and share between runs.
    return sorted(
        c
        for i, c in _live_actors().items()
        if i not in before and c != "_AutoscalingCoordinatorActor"
    )


def _spec_with(*overrides):
    from orchestrator.spec import load_spec_text

    base = yaml.safe_dump(
        {
            **SPEC,
            "sweep": {
                "metric": "accuracy",
                "mode": "max",
                "num_samples": 4,
                "max_concurrent": 2,
                "search_space": {"train.lr": {"loguniform": [1e-4, 1e-1]}},
            },
        }
    )
    return load_spec_text(base, list(overrides))


def test_maps_onto_ray_tune_objects():
    """Builds Tune's objects (imports ray.tune; starts nothing)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.sample import Categorical, Float, Integer

    from orchestrator.sweep.spec import validate_sweep
    from orchestrator.sweep.tune import (
        param_space,
        search_algorithm,
        trial_scheduler,
        tune_config,
    )

    spec = _spec_with(
        "sweep.search_space.train.batch_size.choice=[16, 32]",
        "sweep.search_space.seed.randint=[0, 9]",
        "sweep.scheduler.type=asha",
        "sweep.scheduler.max_t=6",
    )
    sw = validate_sweep(spec)
    space = param_space(sw)
    assert isinstance(space["train.lr"], Float) and isinstance(space["seed"], Integer)
    assert isinstance(space["train.batch_size"], Categorical)
    sched = trial_scheduler(sw)
    assert isinstance(sched, ASHAScheduler) and sched._max_t == 6
    warm = [{"train.lr": 0.003, "train.batch_size": 32, "seed": 1}]
    alg = search_algorithm(sw, warm)
    assert isinstance(alg, BasicVariantGenerator)
    assert alg._points_to_evaluate == warm and alg.max_concurrent == 2
    cfg = tune_config(sw, warm)
    assert (cfg.metric, cfg.mode, cfg.num_samples) == ("accuracy", "max", 4)
    grid = validate_sweep(
        _spec_with("sweep.algorithm=grid", "sweep.search_space.train.lr.choice=[0.1, 0.01]")
    )
    assert param_space(grid)["train.lr"] == {"grid_search": [0.1, 0.01]}
    pbt = validate_sweep(_spec_with("sweep.scheduler=pbt"))
    assert isinstance(trial_scheduler(pbt), PopulationBasedTraining)
    assert isinstance(trial_scheduler(validate_sweep(_spec_with())), FIFOScheduler)


@pytest.mark.slow
def test_rllib_sweep(ray_local, tmp_runs):
    """Two tiny DQN trials on CartPole through the same sweep path (RUN_SLOW=1)."""
    from orchestrator.spec import load_spec
    from orchestrator.sweep.driver import run_sweep

    spec = load_spec(
        ROOT / "jobs" / "cartpole_dqn.yaml",
        [
            f"storage_path={tmp_runs}",
            "train.stop_env_steps=2000",
            "train.steps_per_iteration=500",
            "train.learning_starts=200",
            "train.eval_episodes=1",
            "train.buffer_capacity=5000",
            "checkpoint.every_steps=1000",
            "sweep.metric=episode_return_mean",
            "sweep.mode=max",
            "sweep.num_samples=2",
            "sweep.max_concurrent=1",
            "sweep.search_space.train.lr.loguniform=[1.0e-4, 1.0e-3]",
        ],
    )
    summary = run_sweep(spec, sweep_id="dqn", live_every_s=1e9)
    assert summary["status"] == "SUCCEEDED", summary.get("error")
    assert len(summary["trials"]) == 2 and all(t["finished"] for t in summary["trials"])
    assert summary["best_checkpoint"]


WARM = """
name: warm
workload: mnist_mlp
storage_path: {storage}
resources: {{workers: 1, cpus_per_worker: 1}}
train: {{epochs: 1, max_steps: 20, batch_size: 32, hidden: [32], log_every: 10}}
checkpoint: {{every_steps: 20, keep: 1}}
sweep:
  metric: loss
  mode: min
  num_samples: 2
  max_concurrent: 2
  algorithm: random
  seed: 0
  search_space:
    train.lr: {{loguniform: [1.0e-4, 3.0e-3]}}
schedule:
  cron: "0 3 * * *"
  warm_start: 2
"""


@pytest.mark.timeout(1800)
def test_warm_started_fire_runs_the_champion_once_and_explores(ray_local, tmp_path):
    """Two fires of a 2-sample scheduled sweep (issue 23): the second runs the first's best
    config once and one config of its searcher's own, not the champion twice; trials are
    named after their sweep in the ledger, the trial folders and orch report."""
    from orchestrator import report
    from orchestrator.sweep.schedule import Store, add_schedule, run_fire

    storage = tmp_path / "runs"
    spec_path = tmp_path / "warm.yaml"
    spec_path.write_text(WARM.format(storage=storage))
    db = str(tmp_path / "s.db")
    t0 = 1_735_700_000.0
    s = add_schedule(db, str(spec_path), [], now=t0)
    store = Store(db)
    log: list[str] = []
    summaries = []
    for day in range(2):
        fire = store.claim_now(s.id, t0 + 86400 * day)
        summaries.append(run_fire(store, fire.id, pid=os.getpid(), log=log.append))
        assert store.fire(fire.id).status == "succeeded", store.fire(fire.id).reason
    first, second = summaries
    assert first["status"] == second["status"] == "SUCCEEDED", (first, second)
    first_cfgs = [t["config"] for t in first["trials"]]
    second_cfgs = [t["config"] for t in second["trials"]]
    champion = first["best_config"]
    print(f"fire 1: {first_cfgs}, champion {champion}; fire 2: {second_cfgs}")
    assert len(first_cfgs) == len(second_cfgs) == 2
    assert second_cfgs.count(champion) == 1, (champion, second_cfgs)
    new = [c for c in second_cfgs if c != champion]
    assert new[0] not in first_cfgs, (first_cfgs, second_cfgs)
    assert any("warm start of" in line and "each run once" in line for line in log), log
    # Names: <sweep_id>-<n>-<hash> in the ledger, Tune's folders, trials/<name>/, the report.
    sid = second["sweep_id"]
    rows = trial_rows(storage, sid)
    names = {r["run_name"] for r in rows}
    assert len(names) == 2 and all(n.startswith(f"{sid}-") for n in names), names
    assert names == {t["trial"] for t in second["trials"]}
    for n in names:
        assert (storage / sid / n).is_dir() and (storage / sid / "trials" / n).is_dir()
    page = report.report(sid, storage).read_text()
    assert all(n in page for n in names)
    assert "run_trial_" not in page
