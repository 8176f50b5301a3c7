"""The scheduler with an injected clock and a fake runner: no Ray, no processes."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchestrator import ledger
from orchestrator.errors import SpecError
from orchestrator.sweep.schedule import (
    Schedule,
    ScheduleError,
    Scheduler,
    ScheduleSpec,
    Store,
    add_schedule,
    current_champion,
    fire_seed,
    fire_times,
    maybe_promote,
    next_fire,
    run_fire,
    warm_start_points,
)

HOUR = 3600.0


def ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc).timestamp()


class FakeClock:
    def __init__(self, t: float):
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class FakeRunner:
    """Processes that outlive a scheduler: the test decides when each one ends."""

    def __init__(self):
        self.started: list[tuple[int, bool]] = []
        self.running: set[int] = set()
        self.stopped: list[int] = []

    def start(self, fire, resume):
        self.started.append((fire.id, resume))
        self.running.add(fire.id)
        return 1000 + fire.id

    def alive(self, fire):
        return fire.id in self.running

    def stop(self, fire):
        self.stopped.append(fire.id)
        self.running.discard(fire.id)


def make(
    tmp_path: Path,
    cron="0 3 * * *",
    missed="skip",
    concurrency="forbid",
    created="2025-01-01 00:00",
    name="nightly",
    grace=60.0,
):
    store = Store(tmp_path / "s.db")
    t0 = ts(created)
    store.add(
        Schedule(
            id=name,
            spec_path="spec.yaml",
            overrides=[],
            cron=cron,
            missed=missed,
            concurrency=concurrency,
            warm_start=3,
            promote=True,
            misfire_grace_s=grace,
            address=None,
            created=t0,
            next_fire=next_fire(cron, t0),
        )
    )
    return store, FakeClock(t0)


def test_cron_times_are_utc_and_strictly_after():
    assert next_fire("0 3 * * *", ts("2025-01-01 03:00")) == ts("2025-01-02 03:00")
    assert fire_times("0 * * * *", ts("2025-01-01 00:00"), ts("2025-01-01 03:00")) == [
        ts("2025-01-01 00:00"),
        ts("2025-01-01 01:00"),
        ts("2025-01-01 02:00"),
        ts("2025-01-01 03:00"),
    ]


def test_schedule_spec_rejects_bad_cron_and_policies():
    with pytest.raises(ValueError, match="five-field cron"):
        ScheduleSpec.model_validate({"cron": "every day"})
    with pytest.raises(ValueError):
        ScheduleSpec.model_validate({"cron": "0 3 * * *", "missed": "later"})
    with pytest.raises(ValueError):
        ScheduleSpec.model_validate({"cron": "0 3 * * *", "concurrency": "queue"})
    assert ScheduleSpec.model_validate({"cron": "*/5 * * * *"}).missed == "skip"


def test_fires_on_time_and_not_before(tmp_path):
    store, clock = make(tmp_path)
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    clock.t = ts("2025-01-01 02:59")
    assert sch.tick() == []
    clock.t = ts("2025-01-01 03:00") + 5
    started = sch.tick()
    assert [f.fire_time for f in started] == [ts("2025-01-01 03:00")]
    assert started[0].sweep_id == "nightly-20250101-030000"
    assert started[0].status == "running" and started[0].attempts == 1
    assert sch.tick() == []  # same minute again: nothing
    assert store.get("nightly").next_fire == ts("2025-01-02 03:00")


def test_run_forever_sleeps_until_the_next_fire(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", concurrency="allow")
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    sch.run_forever(interval_s=HOUR * 10, max_ticks=4)  # wakes at 01:00, 02:00, 03:00
    runner.running.clear()
    assert [store.fire(i).fire_time for i, _ in runner.started] == [
        ts("2025-01-01 01:00"),
        ts("2025-01-01 02:00"),
        ts("2025-01-01 03:00"),
    ]


def test_restart_loses_nothing_and_doubles_nothing(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", concurrency="allow")
    runner = FakeRunner()  # the fire processes survive the scheduler's restart
    clock.t = ts("2025-01-01 01:00")
    # Scheduler A claims the 01:00 fire and dies before starting it.
    claimed = store.claim_due("nightly", clock.now())
    assert [f.status for f in claimed] == ["claimed"]
    # Scheduler B (a restart, a new Store on the same file) starts it exactly once.
    b = Scheduler(Store(tmp_path / "s.db"), runner, clock, log=lambda *_: None)
    assert [f.id for f in b.tick()] == [claimed[0].id]
    assert b.tick() == []
    # It is running; B restarts as C: C neither re-fires 01:00 nor restarts the running fire.
    c = Scheduler(Store(tmp_path / "s.db"), runner, clock, log=lambda *_: None)
    assert c.tick() == []
    # The fire's process dies mid-sweep: the next scheduler continues it (resume), once.
    runner.running.discard(claimed[0].id)
    d = Scheduler(Store(tmp_path / "s.db"), runner, clock, log=lambda *_: None)
    assert [(f.id, f.attempts) for f in d.tick()] == [(claimed[0].id, 2)]
    assert runner.started == [(claimed[0].id, False), (claimed[0].id, True)]
    clock.t = ts("2025-01-01 02:00")
    assert len(d.tick()) == 1
    fires = store.fires("nightly")
    assert [f.fire_time for f in fires] == [ts("2025-01-01 01:00"), ts("2025-01-01 02:00")]


def test_two_schedulers_at_once_claim_each_fire_once(tmp_path):
    store, clock = make(tmp_path, cron="* * * * *", concurrency="allow")
    clock.t = ts("2025-01-01 00:10")
    results: list[int] = []
    barrier = threading.Barrier(4)

    def claim():
        s = Store(tmp_path / "s.db")
        barrier.wait()
        results.extend(f.id for f in s.claim_due("nightly", clock.now()) if f.status == "claimed")

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1
    assert len(store.fires("nightly", status=("claimed",))) == 1


def test_missed_fires_skip(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", missed="skip")
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    clock.t = ts("2025-01-01 05:30")  # down from 00:00 to 05:30: 01..05 missed
    assert sch.tick() == []
    fires = store.fires("nightly")
    assert [(f.status, f.fire_time) for f in fires] == [("skipped", ts("2025-01-01 05:00"))]
    assert "missed 5 fire(s)" in fires[0].reason
    assert store.get("nightly").next_fire == ts("2025-01-01 06:00")
    clock.t = ts("2025-01-01 06:00")
    assert len(sch.tick()) == 1  # back on schedule


def test_missed_fires_run_once(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", missed="run_once")
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    clock.t = ts("2025-01-01 05:30")
    started = sch.tick()
    assert [f.fire_time for f in started] == [ts("2025-01-01 05:00")]
    assert "run once for 5 missed" in started[0].reason
    statuses = sorted(f.status for f in store.fires("nightly"))
    assert statuses == ["running", "skipped"]  # 01..04 recorded as skipped, 05:00 runs
    assert sch.tick() == []


def test_late_within_grace_is_on_time(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", missed="skip", grace=120)
    sch = Scheduler(store, FakeRunner(), clock, log=lambda *_: None)
    clock.t = ts("2025-01-01 01:00") + 90
    assert len(sch.tick()) == 1


def test_concurrency_forbid(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", concurrency="forbid")
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    clock.t = ts("2025-01-01 01:00")
    first = sch.tick()[0]
    clock.t = ts("2025-01-01 02:00")  # the 01:00 sweep still runs
    assert sch.tick() == []
    second = store.fires("nightly")[-1]
    assert second.status == "forbidden" and "concurrency: forbid" in second.reason
    assert runner.started == [(first.id, False)] and runner.stopped == []
    runner.running.discard(first.id)
    store.mark(first.id, "succeeded", expect=("running",))
    clock.t = ts("2025-01-01 03:00")
    assert len(sch.tick()) == 1


def test_concurrency_allow(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", concurrency="allow")
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    for h in ("01", "02"):
        clock.t = ts(f"2025-01-01 {h}:00")
        assert len(sch.tick()) == 1
    assert len(runner.running) == 2


def test_concurrency_replace(tmp_path):
    store, clock = make(tmp_path, cron="0 * * * *", concurrency="replace")
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    clock.t = ts("2025-01-01 01:00")
    first = sch.tick()[0]
    clock.t = ts("2025-01-01 02:00")
    second = sch.tick()[0]
    assert runner.stopped == [first.id]
    assert store.fire(first.id).status == "replaced"
    assert runner.running == {second.id}


# -- sweeps with memory ------------------------------------------------------------------------

SPEC = """
name: mem
workload: mnist_mlp
storage_path: {storage}
train: {{epochs: 1, max_steps: 5}}
sweep:
  metric: accuracy
  mode: max
  num_samples: 3
  search_space:
    train.lr: {{loguniform: [1.0e-4, 1.0e-1]}}
    train.batch_size: {{choice: [32, 64]}}
schedule:
  cron: "0 3 * * *"
  warm_start: 2
"""


class FakeSweeps:
    """Stands in for orchestrator.sweep.driver.run_sweep: records the warm start, writes the sweep's
    final ledger row (as run_sweep does) with a scripted best result."""

    def __init__(self, storage: Path, results: list[tuple[dict, float]]):
        self.storage, self.results, self.calls = storage, list(results), []

    def __call__(self, spec, *, resume, sweep_id, address, points_to_evaluate, schedule_id):
        self.calls.append(
            {
                "sweep_id": sweep_id,
                "resume": resume,
                "points": points_to_evaluate,
                "seed": spec.sweep.get("seed"),
            }
        )
        cfg, acc = self.results.pop(0)
        ledger.record(
            self.storage,
            run_id=sweep_id,
            run_name=sweep_id,
            workload=spec.workload,
            status="SUCCEEDED",
            kind="sweep",
            sweep_id=sweep_id,
            metrics={"accuracy": acc},
            extra={
                "schedule_id": schedule_id,
                "metric": "accuracy",
                "mode": "max",
                "best_config": cfg,
            },
        )
        return {
            "status": "SUCCEEDED",
            "metric": "accuracy",
            "mode": "max",
            "best_metric": acc,
            "best_config": cfg,
            "best_trial": "t0",
            "best_checkpoint": f"/ck/{sweep_id}",
            "sweep_id": sweep_id,
        }


def test_warm_start_and_champion_across_fires(tmp_path):
    storage = tmp_path / "runs"
    spec_path = tmp_path / "mem.yaml"
    spec_path.write_text(SPEC.format(storage=storage))
    db = tmp_path / "s.db"
    t0 = ts("2025-01-01 00:00")
    s = add_schedule(str(db), str(spec_path), [], now=t0)
    assert (s.id, s.cron, s.warm_start) == ("mem", "0 3 * * *", 2)
    store = Store(db)
    clock = FakeClock(t0)
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    first_best = {"train.lr": 0.003, "train.batch_size": 64}
    sweeps = FakeSweeps(
        storage,
        [
            (first_best, 0.90),
            ({"train.lr": 0.05, "train.batch_size": 32}, 0.80),
            ({"train.lr": 0.002, "train.batch_size": 32}, 0.95),
        ],
    )
    log = []
    summaries = []
    for day in ("01", "02", "03"):
        clock.t = ts(f"2025-01-{day} 03:00")
        fire = sch.tick()[0]
        summaries.append(
            run_fire(store, fire.id, sweep_fn=sweeps, clock=clock, pid=1, log=log.append)
        )
        runner.running.discard(fire.id)
        assert store.fire(fire.id).status == "succeeded"
    # The first sweep starts cold; the second is seeded with the first's best config.
    assert sweeps.calls[0]["points"] == []
    assert sweeps.calls[1]["points"] == [first_best]
    assert sweeps.calls[2]["points"][0] == first_best  # best first (0.90 > 0.80)
    assert len(sweeps.calls[2]["points"]) == 2
    # Champion: day 1 promoted, day 2 (worse) not, day 3 (better) promoted.
    assert [x["promoted"] for x in summaries] == [True, False, True]
    champ = current_champion(str(storage), "mem")
    assert champ["metrics"]["accuracy"] == 0.95 and champ["extra"]["previous"] == 0.90
    assert champ["sweep_id"] == "mem-20250103-030000"


def _three_fires(tmp_path, overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = tmp_path / "runs"
    spec_path = tmp_path / "mem.yaml"
    spec_path.write_text(SPEC.format(storage=storage))
    add_schedule(str(tmp_path / "s.db"), str(spec_path), overrides, now=ts("2025-01-01 00:00"))
    store = Store(tmp_path / "s.db")
    clock = FakeClock(ts("2025-01-01 00:00"))
    runner = FakeRunner()
    sch = Scheduler(store, runner, clock, log=lambda *_: None)
    sweeps = FakeSweeps(
        storage,
        [
            ({"train.lr": 0.003, "train.batch_size": 64}, 0.90),
            ({"train.lr": 0.05, "train.batch_size": 32}, 0.80),
            ({"train.lr": 0.002, "train.batch_size": 32}, 0.95),
        ],
    )
    log: list[str] = []
    for day in ("01", "02", "03"):
        clock.t = ts(f"2025-01-{day} 03:00")
        fire = sch.tick()[0]
        run_fire(store, fire.id, sweep_fn=sweeps, clock=clock, pid=1, log=log.append)
        runner.running.discard(fire.id)
    return sweeps.calls, log


def test_each_fire_seeds_its_searcher_differently(tmp_path):
    """One sweep.seed for every fire made each fire draw the same configs (the previous
    champion among them): each fire's searcher seed is derived from it and the sweep id."""
    calls, log = _three_fires(tmp_path, ["sweep.seed=7"])
    seeds = [c["seed"] for c in calls]
    assert seeds == [fire_seed(7, c["sweep_id"]) for c in calls]
    assert len(set(seeds)) == 3
    assert any(f"searcher seed of {calls[0]['sweep_id']}: {seeds[0]}" in line for line in log)
    # Without a sweep.seed the searchers draw fresh entropy: nothing to derive.
    calls, _ = _three_fires(tmp_path / "unseeded", [])
    assert [c["seed"] for c in calls] == [None, None, None]


def test_warm_start_leaves_samples_to_the_searcher(tmp_path):
    # warm_start: 2, but a 2-sample sweep seeds one config: the other sample explores.
    calls, log = _three_fires(tmp_path, ["sweep.num_samples=2"])
    assert [len(c["points"]) for c in calls] == [0, 1, 1]
    assert calls[2]["points"] == [{"train.lr": 0.003, "train.batch_size": 64}]  # best first
    assert any("1 previous best config(s) left out" in line for line in log)
    # A grid sweep runs its whole grid (the previous best among it): no seeds.
    calls, log = _three_fires(
        tmp_path / "grid",
        [
            "sweep.algorithm=grid",
            "sweep.search_space.train.lr={grid: [0.003, 0.05, 0.002]}",
        ],
    )
    assert [c["points"] for c in calls] == [[], [], []]
    assert any("a grid sweep runs every config of its grid anyway" in line for line in log)


def test_warm_start_ignores_other_schedules_and_changed_spaces(tmp_path):
    storage = tmp_path / "runs"
    for sid, sched, cfg, acc in (
        ("a", "mine", {"train.lr": 0.1}, 0.5),
        ("b", "other", {"train.lr": 0.2, "seed": 1}, 0.99),
        ("c", "mine", {"train.lr": 0.3, "seed": 2}, 0.7),
    ):
        ledger.record(
            storage,
            run_id=sid,
            run_name=sid,
            workload="w",
            status="SUCCEEDED",
            kind="sweep",
            metrics={"accuracy": acc},
            extra={"schedule_id": sched, "metric": "accuracy", "mode": "max", "best_config": cfg},
        )
    assert warm_start_points(str(storage), "mine", ["train.lr", "seed"], 5) == [
        {"train.lr": 0.3, "seed": 2}
    ]
    assert warm_start_points(str(storage), "mine", ["train.lr"], 5) == [
        {"train.lr": 0.3},
        {"train.lr": 0.1},
    ]
    assert warm_start_points(str(storage), "mine", ["train.lr"], 0) == []


def test_promotion_respects_mode_and_ties(tmp_path):
    storage = str(tmp_path)
    base = {"status": "SUCCEEDED", "metric": "loss", "mode": "min", "best_config": {}}
    assert maybe_promote(storage, "x", {**base, "best_metric": 0.5, "sweep_id": "s1"})
    assert not maybe_promote(storage, "x", {**base, "best_metric": 0.5, "sweep_id": "s2"})  # tie
    assert not maybe_promote(storage, "x", {**base, "best_metric": 0.7, "sweep_id": "s3"})
    assert maybe_promote(storage, "x", {**base, "best_metric": 0.4, "sweep_id": "s4"})
    assert not maybe_promote(storage, "x", {**base, "status": "FAILED", "best_metric": 0.1})
    rows = [r for r in ledger.read_events(storage).to_pylist() if r["kind"] == "champion"]
    assert [json.loads(r["metrics"])["loss"] for r in rows] == [0.5, 0.4]


def test_add_schedule_errors(tmp_path):
    spec_path = tmp_path / "mem.yaml"
    spec_path.write_text(
        SPEC.format(storage=tmp_path / "runs").replace('  cron: "0 3 * * *"\n', "")
    )
    with pytest.raises(SpecError, match="schedule.cron"):
        add_schedule(str(tmp_path / "s.db"), str(spec_path), [])
    with pytest.raises(SpecError, match="schedule.concurrency"):
        add_schedule(
            str(tmp_path / "s.db"), str(spec_path), [], cron="0 3 * * *", concurrency="queue"
        )
    add_schedule(str(tmp_path / "s.db"), str(spec_path), [], cron="0 3 * * *")
    with pytest.raises(ScheduleError, match="exists already"):
        add_schedule(str(tmp_path / "s.db"), str(spec_path), [], cron="0 4 * * *")
    Store(tmp_path / "s.db").remove("mem")
    with pytest.raises(ScheduleError, match="no schedule"):
        Store(tmp_path / "s.db").remove("mem")


def test_cli_add_list_remove(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    spec_path = tmp_path / "mem.yaml"
    spec_path.write_text(SPEC.format(storage=tmp_path / "runs"))
    db = str(tmp_path / "s.db")
    r = CliRunner().invoke(
        app,
        [
            "schedule",
            "add",
            str(spec_path),
            "--cron",
            "*/5 * * * *",
            "--name",
            "five",
            "--concurrency",
            "replace",
            "--db",
            db,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "added schedule five" in r.output
    r = CliRunner().invoke(app, ["schedule", "list", "--db", db])
    assert r.exit_code == 0 and "five" in r.output and "replace" in r.output
    r = CliRunner().invoke(app, ["schedule", "add", str(spec_path), "--cron", "bad", "--db", db])
    assert r.exit_code == 2 and "schedule.cron" in r.output
    r = CliRunner().invoke(app, ["schedule", "remove", "five", "--db", db])
    assert r.exit_code == 0
    r = CliRunner().invoke(app, ["schedule", "remove", "five", "--db", db])
    assert r.exit_code == 6 and "no schedule 'five'" in r.output
