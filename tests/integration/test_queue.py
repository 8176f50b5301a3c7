"""The queue on a real cluster: the local 3-node cluster of cluster/local_cluster.py (a head
with no CPUs, two worker nodes of one CPU: room for two 1-CPU workers) and its S3 bucket, driven
by the commands a user types (`orch submit --queue`, `orch queue ...`):

- ten jobs at three priorities (one of them two workers wide, two in a queue with a 1-CPU
  quota) start in priority order, never more at once than fit, each once, and `orch queue`
  says why each waits (the missing CPUs, the job ahead, the quota); the queue's process is
  SIGKILLed half-way: it restarts, nothing is lost or started twice;
- a high-priority arrival preempts a running low-priority job, which goes back to the queue,
  resumes from its checkpoint and ends with the final metrics of an uninterrupted twin;
- bad input (an unknown queue, a negative priority, a job larger than the cluster): exit 2 at
  submit, nothing queued.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "cluster"))
from local_cluster import LocalCluster  # noqa: E402 - cluster/ is a folder of scripts

pytestmark = pytest.mark.integration
ORCH = [sys.executable, "-m", "orchestrator.cli"]
BUCKET = "s3://orch/runs"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("qcluster"))
    try:
        c.up(workers=2, cpus=1, bucket="orch")
        yield c
    finally:
        c.down()


def orch(cluster, *args: str, check: bool = True, timeout: float = 120):
    env = cluster.env()
    env.pop("ORCH_FAULTS", None)
    env["ORCH_QUEUE_TICK_S"] = "0.5"
    out = subprocess.run(
        [*ORCH, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def submit(cluster, jid: str, *extra: str, hold: bool = True) -> None:
    orch(
        cluster,
        "submit",
        "jobs/mnist_mlp.yaml",
        f"storage_path={BUCKET}",
        "resources.workers=1",
        "train.epochs=1",
        "checkpoint.every_steps=32",
        *extra,
        "--submission-id",
        jid,
        *(["--hold"] if hold else []),
    )


def table(cluster) -> dict[str, dict]:
    out = orch(cluster, "queue", "--all", "--format", "json").stdout
    return {j["id"]: j for j in json.loads(out)}


def wait_for(cluster, pred, what: str, timeout_s: float = 400, every: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = table(cluster)
        if pred(jobs):
            return jobs
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(table(cluster), indent=1)}")


def ray_jobs(cluster) -> list:
    from orchestrator.cluster.jobs import make_client

    return make_client(cluster.dashboard_url, env=cluster.client_env()).list_jobs()


def max_overlap(intervals: list[tuple[float, float, int]]) -> int:
    events = sorted([(s, w) for s, _, w in intervals] + [(e, -w) for _, e, w in intervals])
    now = most = 0
    for _, w in events:
        now += w
        most = max(most, now)
    return most


WATCH = """
import json, sys, time
from orchestrator.queue import client
client.connect()
out = open(sys.argv[1], "a")
while True:
    try:
        jobs = client.call(client.handle(create=False), "jobs", True)
        out.write(json.dumps({j["id"]: j for j in jobs}) + "\\n")
        out.flush()
    except Exception:
        pass  # the actor is being restarted
    time.sleep(0.2)
"""


class Watcher:
    """Snapshots of the queue every 0.2 s from one process connected to the queue actor (a
    CLI call takes seconds: short-lived states would slip between two of them)."""

    def __init__(self, cluster, path: Path):
        self.path = path
        env = cluster.env()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WATCH, str(path)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def seen(self, pred) -> dict | None:
        for line in self.path.read_text().splitlines():
            try:
                snap = json.loads(line)
            except ValueError:
                continue
            if pred(snap):
                return snap
        return None


def test_ten_jobs_three_priorities_quota_and_the_queue_killed(cluster, tmp_path):
    orch(cluster, "queue", "create", "team-a", "--cpus", "1")
    # id: (priority, extra overrides). 'long' keeps one node busy so that 'wide' (both nodes)
    # waits with one CPU free and 'c' waits behind it; 'h' runs longer than 'g', so a free CPU
    # meets 'i' held back by team-a's quota.
    jobs = {
        "long": (10, ["train.epochs=5"]),
        "a": (10, []),
        "wide": (5, ["resources.workers=2"]),
        "c": (5, []),
        "d": (5, []),
        "e": (0, []),
        "f": (0, []),
        "g": (0, []),
        "h": (0, ["train.epochs=3", "--queue", "team-a"]),
        "i": (0, ["--queue", "team-a"]),
    }
    for jid, (prio, extra) in jobs.items():  # held: nothing starts before all are in
        submit(cluster, jid, "--priority", str(prio), *extra)
    held = table(cluster)
    assert sorted(held) == sorted(jobs) and {j["state"] for j in held.values()} == {"HELD"}
    watch = Watcher(cluster, tmp_path / "snapshots.jsonl")
    orch(cluster, "queue", "release", *jobs)
    try:
        wait_for(cluster, lambda t: t["wide"]["state"] != "QUEUED", "'wide' to start")
        text = orch(cluster, "queue").stdout  # what a user reads: one line per job
        waiting = [x for x in text.splitlines() if "QUEUED" in x]
        assert waiting and all("needs 1 x {CPU: 1}; 0 CPU free" in x for x in waiting), text
        # Kill the queue's process (SIGKILL) while jobs run and wait: Ray restarts it.
        info = json.loads(orch(cluster, "queue", "info").stdout)
        os.kill(info["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            out = orch(cluster, "queue", "info", check=False)
            if out.returncode == 0 and json.loads(out.stdout)["pid"] != info["pid"]:
                break
            assert time.monotonic() < deadline, out.stderr
            time.sleep(1)
        done = wait_for(
            cluster,
            lambda t: all(t[j]["state"] in ("SUCCEEDED", "FAILED") for j in jobs),
            "all ten to end",
            timeout_s=600,
        )
    finally:
        watch.close()
    assert {j: done[j]["state"] for j in jobs} == dict.fromkeys(jobs, "SUCCEEDED")

    # Why each waited, as the queue said it while it happened.
    assert watch.seen(lambda t: t["d"]["why"] == "needs 1 x {CPU: 1}; 0 CPU free")
    behind = watch.seen(lambda t: t["c"]["why"].startswith("behind"))
    assert behind, "'c' never waited behind 'wide'"
    assert behind["c"]["why"] == "behind 'wide' (priority 5)"
    assert behind["wide"]["why"] == "needs 2 x {CPU: 1}; 1 CPU free"
    quota = watch.seen(lambda t: t["g"]["state"] == "SUCCEEDED" and t["i"]["state"] == "QUEUED")
    assert quota and quota["h"]["state"] == "RUNNING", "'i' never met a free CPU while 'h' ran"
    assert quota["i"]["why"] == "queue 'team-a' at its quota: 1 of 1 CPUs in use, this job needs 1"

    # Each ran once (one Ray job per id, attempt 1), in priority order, never over capacity.
    ours = [r for r in ray_jobs(cluster) if r.submission_id in jobs]
    assert sorted(r.submission_id for r in ours) == sorted(jobs)
    assert {r.metadata["orch_queue_attempt"] for r in ours} == {"1"}
    starts = sorted(ours, key=lambda r: r.start_time)
    prios = [jobs[r.submission_id][0] for r in starts]
    assert prios == sorted(prios, reverse=True), [r.submission_id for r in starts]
    width = {j: 2 if j == "wide" else 1 for j in jobs}
    assert max_overlap([(r.start_time, r.end_time, width[r.submission_id]) for r in ours]) <= 2
    team_a = [(r.start_time, r.end_time, 1) for r in ours if r.submission_id in ("h", "i")]
    assert max_overlap(team_a) == 1
    # Ledger: one run per job, each SUCCEEDED.
    runs = [r for r in _runs(cluster) if r["run_name"] in jobs]
    assert sorted(r["run_name"] for r in runs) == sorted(jobs)
    assert {r["status"] for r in runs} == {"SUCCEEDED"}
    # Every attempt's log was kept next to the runs.
    show = json.loads(orch(cluster, "queue", "show", "wide", "--json").stdout)
    assert show["attempts"][0]["log"] == f"{BUCKET}/_queue/wide/attempt-1.log"


def _runs(cluster) -> list[dict]:
    """The ledger's latest row per run, read from the bucket."""
    from orchestrator import ledger

    with mock.patch.dict(os.environ, cluster.s3_env()):
        return ledger.latest_by_run(BUCKET)


def _final_accuracy(cluster, run: str) -> float:
    # One ledger row per `orch run` process: a preempted run has a STOPPED one, then its
    # resumed run's.
    (row,) = [r for r in _runs(cluster) if r["run_name"] == run and r["status"] == "SUCCEEDED"]
    return json.loads(row["metrics"])["accuracy"]


def test_preempted_job_resumes_with_the_metrics_of_an_uninterrupted_run(cluster):
    common = ["train.epochs=4", "checkpoint.every_steps=16", "--priority", "1"]
    submit(cluster, "twin", *common, "--no-preemptible", hold=False)
    submit(cluster, "victim", *common, hold=False)
    from orchestrator import rundir

    deadline = time.monotonic() + 300
    while True:
        with mock.patch.dict(os.environ, cluster.s3_env()):
            if rundir.latest_complete(f"{BUCKET}/victim"):
                break
        assert time.monotonic() < deadline, table(cluster)["victim"]
        time.sleep(1)
    submit(cluster, "urgent", "--priority", "9", hold=False)
    jobs = wait_for(
        cluster, lambda t: t["victim"]["preemptions"] == 1, "'victim' preempted", every=0.5
    )
    assert jobs["twin"]["preemptions"] == 0  # not preemptible
    done = wait_for(
        cluster,
        lambda t: all(
            t[j]["state"] in ("SUCCEEDED", "FAILED") for j in ("twin", "victim", "urgent")
        ),
        "all three to end",
    )
    assert done["victim"]["state"] == "SUCCEEDED", orch(cluster, "queue", "show", "victim").stdout
    assert done["victim"]["failures"] == 0 and done["victim"]["attempt"] == 2
    with mock.patch.dict(os.environ, cluster.s3_env()):
        logs = rundir.read_text(f"{BUCKET}/_queue/victim/attempt-2.log")
    assert "resum" in logs.lower(), logs[-2000:]
    statuses = sorted(r["status"] for r in _runs(cluster) if r["run_name"] == "victim")
    assert statuses == ["STOPPED", "SUCCEEDED"]
    assert _final_accuracy(cluster, "victim") == _final_accuracy(cluster, "twin")
    ours = {r.submission_id: r for r in ray_jobs(cluster)}
    assert ours["urgent"].start_time < ours["victim"].start_time  # victim's 2nd attempt after


def test_bad_input_exits_before_anything_is_queued(cluster):
    before = set(table(cluster))
    spec = ["submit", "jobs/mnist_mlp.yaml", f"storage_path={BUCKET}"]
    out = orch(cluster, *spec, "--queue", "nope", check=False)
    assert out.returncode == 2 and "no queue 'nope'; the queues are default" in out.stderr
    out = orch(cluster, *spec, "--priority", "-1", check=False)
    assert out.returncode == 2 and "--priority -1: expected a whole number >= 0" in out.stderr
    out = orch(cluster, *spec, "resources.workers=3", "--queue", "default", check=False)
    assert out.returncode == 4  # can never fit (ExitCode.RESOURCES)
    assert "3 x {CPU: 1} can never run here: the whole cluster has 2 CPU" in out.stderr
    out = orch(cluster, *spec, "queue.priority=-3", check=False)
    assert out.returncode == 2 and "queue.priority" in out.stderr
    assert set(table(cluster)) == before


def test_a_scheduled_sweep_and_its_trials_go_through_the_queue(cluster, tmp_path):
    """Issue 22, item 7: a schedule with a queue fires a queued sweep, whose trials each wait
    in the queue for their worker: with a 1-CPU quota on a cluster with 2 CPUs free, the two
    trials run one after the other, and the fire records the sweep's end and its champion."""
    orch(cluster, "queue", "create", "sweeps", "--cpus", "1")
    db = str(tmp_path / "schedules.db")
    orch(
        cluster,
        "schedule",
        "add",
        "jobs/mnist_mlp_sweep.yaml",
        f"storage_path={BUCKET}",
        "sweep.num_samples=2",
        "sweep.max_concurrent=2",
        "sweep.scheduler.type=none",
        "train.epochs=1",
        "train.max_steps=40",
        "--name",
        "qsweep",
        "--queue",
        "sweeps",
        "--priority",
        "3",
        "--db",
        db,
    )
    out = orch(cluster, "schedule", "run-now", "qsweep", "--db", db, timeout=420)
    assert "succeeded" in out.stdout and "promoted to champion" in out.stdout, out.stdout
    jobs = table(cluster)
    [sweep] = [j for j in jobs.values() if j["kind"] == "sweep" and j["id"].startswith("qsweep-")]
    assert (sweep["state"], sweep["queue"], sweep["priority"]) == ("SUCCEEDED", "sweeps", 3)
    trials = [j for j in jobs.values() if j["kind"] == "trial" and j["parent"] == sweep["id"]]
    assert len(trials) == 2, trials
    assert all(t["state"] == "SUCCEEDED" and t["queue"] == "sweeps" for t in trials), trials
    # The quota, not the cluster, kept them apart: never both at once.
    assert max_overlap([(t["started_at"], t["ended_at"], 1) for t in trials]) == 1
    # The Jobs API saw one job for the sweep, none for its trials.
    ids = {j.submission_id for j in ray_jobs(cluster)}
    assert sweep["id"] in ids and not any(t["id"] in ids for t in trials)
    listed = json.loads(orch(cluster, "schedule", "list", "--db", db, "--format", "json").stdout)
    assert listed[0]["queue"] == "sweeps"
    assert listed[0]["last_fires"][-1]["status"] == "succeeded"
