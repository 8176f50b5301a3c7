"""Sweeps through the queue (issue 22, item 7), on the service with its real SQLite store and
the stand-in Jobs API of test_queue_service: a queued sweep holds nothing itself, and each of
its trials waits in the queue for its own workers (a lease: no Ray job of its own)."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator.queue import service as service_mod
from orchestrator.queue.lease import LeaseLostError, TrialLease
from orchestrator.queue.service import Service
from orchestrator.queue.store import QueueError, Store
from tests.unit.test_queue_service import FakeJobsApi, new_job, states


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def svc(tmp_path):
    api = FakeJobsApi()
    clock = Clock()
    return Service(Store(tmp_path / "q.db"), api, tmp_path, clock=clock), api, clock


def new_sweep(sid, priority=0, queue="default", **kw):
    job = new_job(sid, priority=priority, queue=queue, workers=0, **kw)
    job["kind"] = "sweep"
    job["trial_workers"] = 1
    job["entrypoint"] = f"orch sweep --continue jobs/x.yaml --name {sid}"
    return job


def busy_cluster_and_a_running_sweep(s) -> None:
    """Both 1-CPU nodes taken by plain jobs, and the sweep 'sw' started (it needs nothing)."""
    s.enqueue(new_job("busy1"))
    s.enqueue(new_job("busy2"))
    s.tick()
    s.enqueue(new_sweep("sw"))
    s.tick()


def test_a_queued_sweep_holds_nothing_and_its_trials_queue_under_the_quota(svc):
    s, api, _ = svc
    s.set_queue("team-a", cpus=1)
    s.enqueue(new_sweep("sw", queue="team-a"))
    s.tick()
    assert states(s) == {"sw": "RUNNING"}
    assert api.started == [("sw", "1")]
    t1 = s.enqueue_trial("sw", "sw-1-aaaaa", 1, {"CPU": 1.0})
    t2 = s.enqueue_trial("sw", "sw-2-bbbbb", 1, {"CPU": 1.0})
    assert (t1["id"], t1["kind"], t1["queue"]) == ("sw/sw-1-aaaaa", "trial", "team-a")
    s.tick()
    # Two nodes of 1 CPU, but the queue's quota is 1 CPU: one trial at a time.
    assert states(s)["sw/sw-1-aaaaa"] == "RUNNING"
    assert states(s)["sw/sw-2-bbbbb"] == "QUEUED"
    assert "queue 'team-a' at its quota: 1 of 1 CPUs in use" in s.store.get(t2["id"])["why"]
    assert api.started == [("sw", "1")]  # a trial is a lease, not a Ray job
    assert s.queues()[1]["cpus_in_use"] == 1.0
    assert s.end_trial(t1["id"]) == "SUCCEEDED"
    s.tick()
    assert states(s)["sw/sw-2-bbbbb"] == "RUNNING"
    assert [a["status"] for a in s.job(t1["id"])["attempts"]] == ["SUCCEEDED"]


def test_trials_wait_in_priority_order_with_every_other_job(svc):
    s, api, _ = svc
    s.enqueue(new_job("busy1"))
    s.enqueue(new_job("busy2"))
    s.tick()
    s.enqueue(new_sweep("sw", priority=5))
    s.tick()
    s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})
    s.enqueue(new_job("later-low", priority=1))
    s.enqueue(new_job("later-high", priority=9, preemptible=False))
    s.tick()
    # Both nodes busy with preemptible priority-0 jobs: the priority-9 job preempts one, and
    # the trial (priority 5) preempts the other; the priority-1 job waits.
    assert sorted(api.stopped) == ["busy1", "busy2"]
    assert "preempting 'busy" in s.store.get("sw/t1")["why"]
    assert s.store.get("later-low")["state"] == "QUEUED"
    s.tick()
    st = states(s)
    assert st["later-high"] == "RUNNING" and st["sw/t1"] == "RUNNING"
    assert st["later-low"] == "QUEUED"


def test_a_trial_asking_again_gets_its_row_and_a_resumed_sweep_queues_it_anew(svc):
    s, api, clock = svc
    s.enqueue(new_sweep("sw"))
    s.tick()
    first = s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})
    assert s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})["id"] == first["id"]
    s.tick()
    assert states(s)["sw/t1"] == "RUNNING"
    # The sweep's driver fails and retries in place (attempt 2): the old lease ends with it.
    s.store.update("sw", retries=1)
    api.end("sw", "FAILED", "driver died")
    s.tick()
    assert s.store.get("sw")["attempt"] == 2
    s.tick()
    row = s.store.get("sw/t1")
    assert row["state"] == "STOPPED" and "attempt 1 has ended" in row["message"]
    again = s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})  # Tuner.restore runs it again
    assert again["state"] == "QUEUED" and again["metadata"]["parent_attempt"] == 2
    s.tick()
    assert states(s)["sw/t1"] == "RUNNING"


def test_a_silent_trial_loses_its_lease(svc):
    s, _, clock = svc
    s.enqueue(new_sweep("sw"))
    s.tick()
    s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})
    s.tick()
    clock.t += service_mod.LEASE_TIMEOUT_S / 2
    assert s.trial_beat("sw/t1")["state"] == "RUNNING"
    clock.t += service_mod.LEASE_TIMEOUT_S / 2 + 1
    s.tick()
    assert states(s)["sw/t1"] == "RUNNING"  # it beat half-way: not silent long enough
    clock.t += service_mod.LEASE_TIMEOUT_S
    s.tick()
    row = s.store.get("sw/t1")
    assert row["state"] == "STOPPED" and "stopped beating" in row["message"]


def test_preempting_a_trial_stops_its_sweep_once_and_it_resumes_later(svc):
    s, api, _ = svc
    s.enqueue(new_sweep("sw", priority=0))
    s.tick()
    s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})
    s.enqueue_trial("sw", "t2", 1, {"CPU": 1.0})
    s.tick()
    assert states(s)["sw/t1"] == states(s)["sw/t2"] == "RUNNING"
    s.enqueue(new_job("urgent", priority=9))
    s.enqueue(new_job("plain", priority=0))
    s.tick()
    # One trial's node is wanted: the whole sweep is stopped (one Ray job), once.
    assert api.stopped == ["sw"]
    st = states(s)
    assert st["sw"] == "PREEMPTING"
    assert st["sw/t1"] == st["sw/t2"] == "PREEMPTING"
    s.tick()  # the sweep has stopped: back in the queue (it holds nothing: starts again)
    st = states(s)
    assert st["urgent"] == "RUNNING"
    assert st["sw/t1"] == st["sw/t2"] == "STOPPED"
    assert s.store.get("sw")["preemptions"] == 1 and s.store.get("sw")["failures"] == 0
    s.tick()
    assert states(s)["sw"] == "RUNNING" and s.store.get("sw")["attempt"] == 2
    # Its trials ask again; the free node goes to the first in line.
    s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})
    s.tick()
    st = states(s)
    assert st["plain"] == "RUNNING" and st["sw/t1"] == "QUEUED"


def test_bad_trial_requests_are_refused(svc):
    s, _, _ = svc
    with pytest.raises(QueueError, match="no queued sweep 'nope'"):
        s.enqueue_trial("nope", "t", 1, {"CPU": 1.0})
    s.enqueue(new_job("plain"))
    with pytest.raises(QueueError, match="no queued sweep 'plain'"):
        s.enqueue_trial("plain", "t", 1, {"CPU": 1.0})
    s.enqueue(new_sweep("sw"))
    with pytest.raises(QueueError, match="the sweep 'sw' is QUEUED, not running"):
        s.enqueue_trial("sw", "t", 1, {"CPU": 1.0})
    s.tick()
    with pytest.raises(QueueError, match=r"trial t: 3 x \{CPU: 1\} can never run here"):
        s.enqueue_trial("sw", "t", 3, {"CPU": 1.0})
    s.enqueue_trial("sw", "t", 1, {"CPU": 1.0})
    with pytest.raises(QueueError, match="cancel the sweep"):
        s.cancel("sw/t")
    big = new_sweep("big")
    big["trial_workers"] = 3  # a sweep whose one trial is larger than the cluster
    with pytest.raises(QueueError, match=r"3 x \{CPU: 1\} can never run here"):
        s.enqueue(big)
    assert "big" not in states(s)


def test_cancelling_a_sweep_ends_its_waiting_trials(svc):
    s, api, _ = svc
    busy_cluster_and_a_running_sweep(s)
    s.enqueue_trial("sw", "t1", 1, {"CPU": 1.0})
    s.tick()
    assert states(s)["sw/t1"] == "QUEUED"
    assert s.cancel("sw") == "CANCELLING"
    s.tick()
    assert states(s)["sw/t1"] == "CANCELLED"
    assert states(s)["sw"] == "CANCELLED"


def test_a_state_file_of_the_earlier_queue_gets_the_new_columns(tmp_path):
    path = tmp_path / "q.db"
    Store(path)
    with sqlite3.connect(path) as db:
        for col in ("beat", "parent", "kind"):
            db.execute(f"ALTER TABLE jobs DROP COLUMN {col}")
    store = Store(path)  # as the new queue opens it
    row, new = store.add({**new_job("old"), "seq": 0})
    assert new and row["kind"] == "job" and row["parent"] == ""


def test_trial_lease_waits_then_holds_then_ends(svc, monkeypatch):
    s, _, clock = svc
    busy_cluster_and_a_running_sweep(s)
    said: list[str] = []
    ticks = {"n": 0}

    def call(self, method, *args):
        if method == "trial_beat":  # the queue moves on between the trial's beats
            ticks["n"] += 1
            if ticks["n"] == 2:
                s.store.move("busy1", ("RUNNING",), "SUCCEEDED")
            s.tick()
        return getattr(s, method)(*args)

    monkeypatch.setattr(TrialLease, "_call", call)
    lease = TrialLease("sw", "t1", 1, {"CPU": 1.0}, log=said.append, beat_s=0.01)
    with lease:
        assert states(s)["sw/t1"] == "RUNNING"
    assert states(s)["sw/t1"] == "SUCCEEDED"
    assert any("waits in the queue: needs 1 x {CPU: 1}; 0 CPU free" in x for x in said)
    assert ticks["n"] >= 2


def test_trial_lease_raises_when_its_sweep_is_cancelled_while_it_waits(svc, monkeypatch):
    s, _, _ = svc
    busy_cluster_and_a_running_sweep(s)

    def call(self, method, *args):
        if method == "trial_beat":
            s.cancel("sw")
            s.tick()
        return getattr(s, method)(*args)

    monkeypatch.setattr(TrialLease, "_call", call)
    with pytest.raises(LeaseLostError, match="CANCELLED"):
        with TrialLease("sw", "t1", 1, {"CPU": 1.0}, log=lambda _: None, beat_s=0.01):
            pytest.fail("the trial must not run")


# -- scheduled sweeps through the queue ------------------------------------------------------


def _queued_schedule(tmp_path, svc, **kw):
    from orchestrator.sweep.schedule import QueueRunner, RoutingRunner, Scheduler, add_schedule
    from orchestrator.sweep.schedule import Store as ScheduleStore
    from tests.unit.test_sweep_schedule import SPEC, FakeClock, FakeRunner, ts

    s, api, _ = svc
    wd = tmp_path / "project"
    wd.mkdir()
    spec_path = wd / "mem.yaml"
    spec_path.write_text(SPEC.format(storage=tmp_path / "runs"))
    db = str(tmp_path / "s.db")
    sched = add_schedule(
        db,
        str(spec_path),
        [],
        queue="default",
        working_dir=str(wd),
        now=ts("2026-01-01 00:00"),
        **kw,
    )
    store = ScheduleStore(db)
    local = FakeRunner()
    runner = RoutingRunner(store, local, QueueRunner(store, call=lambda m, *a: getattr(s, m)(*a)))
    clock = FakeClock(ts("2026-01-01 03:00"))
    return sched, store, Scheduler(store, runner, clock=clock, log=lambda *_: None), local


def test_a_scheduled_fire_goes_through_the_queue_and_records_how_it_ended(tmp_path, svc):
    s, api, _ = svc
    sched, store, scheduler, local = _queued_schedule(tmp_path, svc, priority=4)
    assert (sched.queue, sched.priority) == ("default", 4)
    [fire] = scheduler.tick()
    assert local.started == []  # not a local process: a queued sweep
    job = s.store.get(fire.sweep_id)
    assert job["kind"] == "sweep" and job["priority"] == 4 and job["workers"] == 0
    assert job["entrypoint"].startswith("orch sweep --continue --schedule-id mem --warm-start 2")
    assert f"--name {fire.sweep_id}" in job["entrypoint"]
    assert job["pkg_uri"]  # its working dir went with it
    # A scheduler restarted mid-way submits the same fire again: the queue has it already.
    store.mark(fire.id, "claimed", expect=("running",))
    scheduler.tick()
    assert [j["id"] for j in s.jobs()] == [fire.sweep_id]
    s.tick()
    assert api.started == [(fire.sweep_id, "1")]
    scheduler.tick()
    assert store.fire(fire.id).status == "running"
    api.end(fire.sweep_id, "FAILED", "Tune: 3 trials errored")
    s.tick()
    scheduler.tick()
    f = store.fire(fire.id)
    assert f.status == "failed" and "Tune: 3 trials errored" in f.reason


def test_a_queued_schedule_is_checked_when_added(tmp_path, svc):
    from orchestrator.cluster.jobs import JobsInputError
    from orchestrator.errors import SpecError
    from orchestrator.queue.client import QueueInputError
    from orchestrator.sweep.schedule import add_schedule
    from tests.unit.test_sweep_schedule import SPEC

    spec_path = tmp_path / "mem.yaml"
    spec_path.write_text(SPEC.format(storage=tmp_path / "runs"))
    other = tmp_path / "elsewhere"
    other.mkdir()
    db = str(tmp_path / "s.db")
    with pytest.raises(JobsInputError, match="outside the working_dir"):
        add_schedule(db, str(spec_path), [], queue="default", working_dir=str(other))
    with pytest.raises(QueueInputError, match="--priority -1"):
        add_schedule(db, str(spec_path), [], priority=-1, working_dir=str(tmp_path))
    with pytest.raises(SpecError, match="--working-dir: only with a queue"):
        add_schedule(db, str(spec_path), [], working_dir=str(tmp_path))


def test_sweep_and_submit_options_that_do_not_go_together_exit_2(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    res = CliRunner().invoke(app, ["sweep", "jobs/mnist_mlp_sweep.yaml", "--continue"])
    assert res.exit_code == 2 and "--continue and --schedule-id need --name" in res.output
    # --sweep on a spec without a sweep: section: refused before anything is uploaded.
    res = CliRunner().invoke(
        app, ["submit", "jobs/mnist_mlp.yaml", "--sweep", "--queue", "default"]
    )
    assert res.exit_code == 2 and "sweep" in res.output, res.output
