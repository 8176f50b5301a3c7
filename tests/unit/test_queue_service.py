"""The queue service (orchestrator/queue/service.py) over its real SQLite store, with an
in-memory stand-in for the Jobs API (the real one is exercised by
tests/integration/test_queue.py on the local multi-node cluster)."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from orchestrator.queue.service import Service
from orchestrator.queue.store import QueueError, Store


class FakeJobsApi:
    """Ray's Jobs API as the service sees it: submission ids are unique until deleted."""

    def __init__(self, nodes=None):
        self.jobs: dict[str, dict] = {}
        self.started: list[tuple[str, str]] = []  # (id, attempt) per accepted submission
        self.stopped: list[str] = []
        self.deleted: list[str] = []
        self._nodes = nodes or {"n1": {"CPU": 1.0}, "n2": {"CPU": 1.0}}
        self.fail_submit_after_claim = False

    def statuses(self):
        return {k: dict(v) for k, v in self.jobs.items()}

    def submit(self, sid, entrypoint, runtime_env, metadata):
        if self.fail_submit_after_claim:
            self.fail_submit_after_claim = False
            raise KeyboardInterrupt("service killed between claim and submit")
        if sid in self.jobs:
            raise RuntimeError(f"Job with submission_id {sid} already exists.")
        attempt = metadata["orch_queue_attempt"]
        self.jobs[sid] = {"status": "PENDING", "message": "", "attempt": attempt}
        self.started.append((sid, attempt))
        assert runtime_env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"] == "60"

    def stop(self, sid):
        self.stopped.append(sid)
        self.jobs[sid]["status"] = "STOPPED"

    def delete(self, sid):
        assert self.jobs[sid]["status"] in ("SUCCEEDED", "FAILED", "STOPPED")
        del self.jobs[sid]
        self.deleted.append(sid)

    def reusable(self, sid):
        return True

    def logs(self, sid):
        return f"log of {sid}\n"

    def nodes(self):
        return self._nodes

    def ensure_package(self, uri, path):
        assert os.path.exists(path)

    def end(self, sid, status="SUCCEEDED", message=""):
        self.jobs[sid].update(status=status, message=message)


def new_job(jid, priority=0, queue="default", workers=1, retries=0, storage="runs", **kw):
    return {
        "id": jid,
        "queue": queue,
        "priority": priority,
        "preemptible": kw.pop("preemptible", True),
        "retries": retries,
        "workers": workers,
        "per_worker": {"CPU": 1.0},
        "entrypoint": f"orch run jobs/x.yaml --name {jid}",
        "runtime_env": {"env_vars": {}},
        "metadata": {},
        "fingerprint": kw.pop("fingerprint", "fp"),
        "spec": "jobs/x.yaml",
        "run_name": jid,
        "storage_path": storage,
        **kw,
    }


@pytest.fixture
def svc(tmp_path):
    api = FakeJobsApi()
    return Service(Store(tmp_path / "q.db"), api, tmp_path), api


def states(service) -> dict[str, str]:
    return {j["id"]: j["state"] for j in service.jobs()}


def test_bad_input_is_refused(svc):
    s, _ = svc
    with pytest.raises(QueueError, match="no queue 'team-x'; the queues are default"):
        s.enqueue(new_job("a", queue="team-x"))
    with pytest.raises(QueueError, match="priority -1: expected a whole number >= 0"):
        s.enqueue(new_job("a", priority=-1))
    with pytest.raises(QueueError, match=r"3 x \{CPU: 1\} can never run here"):
        s.enqueue(new_job("a", workers=3))
    assert s.jobs() == []


def test_same_id_same_spec_is_the_same_job_other_spec_is_refused(svc):
    s, _ = svc
    assert s.enqueue(new_job("a"))["reused"] is False
    assert s.enqueue(new_job("a"))["reused"] is True
    with pytest.raises(QueueError, match="already names a queued job"):
        s.enqueue(new_job("a", fingerprint="other"))


def test_jobs_start_as_room_frees_and_logs_are_kept(svc, tmp_path):
    s, api = svc
    for i, p in enumerate([0, 5, 9]):
        s.enqueue(new_job(f"j{i}", priority=p, storage=str(tmp_path / "runs")))
    s.tick()
    assert states(s) == {"j0": "QUEUED", "j1": "RUNNING", "j2": "RUNNING"}
    assert s.store.get("j0")["why"] == "needs 1 x {CPU: 1}; 0 CPU free"
    api.end("j2")
    s.tick()
    assert states(s) == {"j0": "RUNNING", "j1": "RUNNING", "j2": "SUCCEEDED"}
    log = tmp_path / "runs" / "_queue" / "j2" / "attempt-1.log"
    assert log.read_text() == "log of j2\n"
    assert (tmp_path / "runs" / "_queue" / "j2" / "record.json").is_file()


def test_failed_job_retries_in_place_under_the_same_id(svc):
    s, api = svc
    s.enqueue(new_job("r", retries=1))
    s.tick()
    api.end("r", "FAILED", "boom")
    s.tick()  # attempt 1 failed: Ray's entry deleted, queued again, started again as attempt 2
    assert api.deleted == ["r"]
    assert api.started == [("r", "1"), ("r", "2")]
    api.end("r", "FAILED", "boom again")
    s.tick()
    row = s.job("r")
    assert row["state"] == "FAILED" and row["failures"] == 2
    assert [a["status"] for a in row["attempts"]] == ["FAILED", "FAILED"]
    assert "boom again" in row["message"]


def test_preempted_job_returns_without_spending_its_failure_budget(svc):
    s, api = svc
    s.enqueue(new_job("low1", priority=0))
    s.enqueue(new_job("low2", priority=0))
    s.tick()
    s.enqueue(new_job("hi", priority=9))
    s.tick()  # low2 (started last... same time: the larger id) is stopped
    victim = api.stopped[0]
    s.tick()  # it has stopped: queued again; hi starts on its node
    assert states(s)["hi"] == "RUNNING"
    row = s.job(victim)
    assert row["state"] == "QUEUED" and row["preemptions"] == 1 and row["failures"] == 0
    assert "resumes from its checkpoint" in row["message"]
    api.end("hi")
    s.tick()
    assert states(s)[victim] == "RUNNING"
    assert api.started.count((victim, "2")) == 1  # same id, next attempt


def test_cancel_hold_release_bump(svc):
    s, api = svc
    for j in ("a", "b", "c"):
        s.enqueue(new_job(j))
    s.hold("c")
    assert s.cancel("b") == "CANCELLED"
    s.tick()
    assert states(s) == {"a": "RUNNING", "b": "CANCELLED", "c": "HELD"}
    with pytest.raises(QueueError, match="only a QUEUED job can be held"):
        s.hold("a")
    s.release("c")
    s.bump("c", 7)
    s.tick()
    assert states(s)["c"] == "RUNNING"
    assert s.cancel("a") == "CANCELLING" and api.stopped == ["a"]
    s.tick()
    assert states(s)["a"] == "CANCELLED"
    with pytest.raises(QueueError, match="no job 'zz'"):
        s.cancel("zz")


def test_quota_admits_nothing_more_until_a_job_ends(svc):
    s, api = svc
    s.set_queue("team-a", cpus=1)
    s.enqueue(new_job("a1", queue="team-a"))
    s.enqueue(new_job("a2", queue="team-a"))
    s.tick()
    s.tick()
    assert states(s) == {"a1": "RUNNING", "a2": "QUEUED"}
    assert "queue 'team-a' at its quota: 1 of 1 CPUs" in s.store.get("a2")["why"]
    api.end("a1")
    s.tick()
    assert states(s)["a2"] == "RUNNING"


def test_ended_jobs_expire_after_their_queue_ttl(tmp_path):
    now = [1000.0]
    api = FakeJobsApi()
    s = Service(Store(tmp_path / "q.db"), api, tmp_path, clock=lambda: now[0])
    s.set_queue("default", ttl_s=3600)
    s.enqueue(new_job("old", storage=str(tmp_path / "runs")))
    s.tick()
    api.end("old")
    s.tick()
    archive = tmp_path / "runs" / "_queue" / "old"
    assert archive.is_dir()
    now[0] += 3000
    assert s.expire() == []
    now[0] += 700
    assert s.expire() == ["old"]
    assert not archive.exists() and s.jobs() == [] and "old" not in api.jobs


def _submit_many(path: str, worker: int, n: int) -> None:
    store = Store(path)
    for i in range(n):
        store.add(new_job(f"w{worker}-{i}"))


def test_200_submissions_from_4_processes_with_the_service_killed_twice(tmp_path):
    """200 concurrent submissions are 200 distinct jobs; a service killed between claiming a
    job and submitting it, and one replaced mid-way, lose none and start none twice."""
    db = str(tmp_path / "q.db")
    Store(db)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_submit_many, args=(db, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    api = FakeJobsApi(nodes={f"n{i}": {"CPU": 1.0} for i in range(8)})
    service = Service(Store(db), api, tmp_path)
    ticks = 0
    while any(p.is_alive() for p in procs) or ticks < 200:
        ticks += 1
        if ticks == 5:
            api.fail_submit_after_claim = True  # killed between claim and submit
        if ticks in (5, 17):
            service = Service(Store(db), api, tmp_path)  # a fresh process
        try:
            service.tick()
        except KeyboardInterrupt:
            service = Service(Store(db), api, tmp_path)
        for sid, j in list(api.jobs.items()):
            if j["status"] == "PENDING":
                api.end(sid)
        if all(j["state"] == "SUCCEEDED" for j in service.jobs()) and len(service.jobs()) == 200:
            break
    for p in procs:
        p.join()
        assert p.exitcode == 0
    jobs = service.jobs()
    assert len(jobs) == 200 and len({j["id"] for j in jobs}) == 200
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}
    assert len(api.started) == 200 and len(set(api.started)) == 200  # each run once
    assert sorted(j["seq"] for j in jobs) == list(range(1, 201))
