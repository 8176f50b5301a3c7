"""The queue service: a detached named actor on the head (`orch-queue` in namespace `orch`,
started by the first `orch submit --queue` / `orch queue`), holding the SQLite store
(orchestrator/queue/store.py) in the head's Ray temp dir and ticking once a second:

1. follow the admitted jobs through the Jobs API (started, ended; archive each attempt's log
   and the job's record under its storage_path; a failure with retries left, and a preempted
   job, go back to the queue under the same submission id);
2. ask the policy (orchestrator/queue/policy.py) who starts, who is preempted, and why each
   waiting job waits;
3. start and preempt through the Jobs API (a preempted job is stopped the way `orch stop` stops
   one: SIGTERM, a STOPPED row, its checkpoints kept; it resumes from the latest later);
4. forget ended jobs past their queue's TTL (their record, logs and Ray's job entry).

Sweeps (`orch submit --sweep --queue`, scheduled sweeps with a queue) are a Ray job of kind
'sweep' that holds nothing itself (its driver only drives Tune): each of its trials asks the
queue for its workers before it starts its Train run (orchestrator/queue/lease.py), as a row of
kind 'trial' that the same rules admit, order, count against the quota and explain. A trial
holds its lease while it beats (every LEASE_BEAT_S); it ends when the trial says so, when it
stops beating for LEASE_TIMEOUT_S, or when its sweep's attempt ends. Preempting a trial stops
its whole sweep (one Ray job), which resumes later with Tuner.restore, every trial from its
checkpoint, each asking the queue again.

The actor restarts when its process dies (max_restarts=-1) and picks up from the store. The
Service class holds all of this without Ray, over a Launcher (the Jobs API here; an in-memory
one in the unit tests), so it is tested on its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

from orchestrator import rundir
from orchestrator.errors import ExitCode
from orchestrator.queue import policy
from orchestrator.queue.store import ACTIVE, TERMINAL, QueueError, Store
from orchestrator.worker import stop

ACTOR_NAME = "orch-queue"
NAMESPACE = "orch"
TICK_ENV = "ORCH_QUEUE_TICK_S"
STATE_ENV = "ORCH_QUEUE_DIR"
# A preempted or cancelled job gets this long after SIGTERM to stop cleanly (a checkpoint, a
# STOPPED row) before Ray's job supervisor sends SIGKILL (Ray's own default is 3 s).
STOP_WAIT_S = stop.JOB_STOP_WAIT_S
RAY_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
REUSE_SETTLE_S = 3.0  # see JobsLauncher.reusable
LEASE_BEAT_S = 5.0  # a trial's heartbeat
LEASE_TIMEOUT_S = 60.0  # a trial silent this long has lost its lease
SWEEP_LIVE = ("STARTING", "RUNNING", "PREEMPTING", "CANCELLING")  # a sweep whose trials may run

log = logging.getLogger(__name__)


class Launcher(Protocol):
    def statuses(self) -> dict[str, dict[str, Any]]: ...
    def submit(self, sid: str, entrypoint: str, runtime_env: dict, metadata: dict) -> None: ...
    def stop(self, sid: str) -> None: ...
    def delete(self, sid: str) -> None: ...
    def reusable(self, sid: str) -> bool: ...
    def logs(self, sid: str) -> str: ...
    def nodes(self) -> dict[str, dict[str, float]]: ...
    def ensure_package(self, uri: str, path: str) -> None: ...


class Service:
    def __init__(self, store: Store, launcher: Launcher, state_dir: str | Path, clock=time.time):
        self.store = store
        self.launcher = launcher
        self.state_dir = Path(state_dir)
        self.clock = clock
        self._tick_lock = threading.Lock()
        self._last_expiry = 0.0
        self.last_error = ""

    # -- requests ------------------------------------------------------------------------

    def enqueue(
        self, job: dict[str, Any], pkg_uri: str = "", pkg_bytes: bytes | None = None
    ) -> dict[str, Any]:
        """Add a job (QUEUED). The same id with the same fingerprint: the existing job,
        `reused`; the same id with another: refused."""
        if int(job["priority"]) < 0:
            raise QueueError(f"priority {job['priority']}: expected a whole number >= 0")
        job = dict(job)
        # A sweep holds nothing itself; what must fit the cluster is one of its trials.
        fit_workers = job.pop("trial_workers", None) or job["workers"]
        if self.store.queue(job["queue"]) is None:
            names = ", ".join(q["name"] for q in self.store.queues())
            raise QueueError(
                f"no queue '{job['queue']}'; the queues are {names} "
                f"(orch queue create {job['queue']} to make one)"
            )
        problem = policy.never_fits(fit_workers, job["per_worker"], self.launcher.nodes())
        if problem:
            raise QueueError(
                f"{problem}. Lower resources.workers / cpus_per_worker / gpus_per_worker, or "
                "add nodes",
                ExitCode.RESOURCES,
            )
        existing = self.store.get(job["id"])
        if existing is None and pkg_uri and pkg_bytes is not None:
            if self.store.package_path(pkg_uri) is None:
                pkgs = self.state_dir / "packages"
                pkgs.mkdir(parents=True, exist_ok=True)
                path = pkgs / pkg_uri.rsplit("/", 1)[-1]
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(pkg_bytes)
                os.replace(tmp, path)
                self.store.add_package(pkg_uri, str(path))
        row, new = self.store.add({**job, "pkg_uri": pkg_uri})
        if not new and row["fingerprint"] != job["fingerprint"]:
            raise QueueError(
                f"submission id '{job['id']}' already names a queued job ({row['state']}) with "
                f"spec {row['spec']}; this one has other settings. Use another --submission-id, "
                "or leave it out.",
                ExitCode.CONFLICT,
            )
        return {"job": row, "reused": not new}

    def _active(self, job_id: str) -> dict[str, Any]:
        row = self.store.get(job_id)
        if row is None:
            raise QueueError(f"no job '{job_id}' in the queue (see orch queue)", ExitCode.NOT_FOUND)
        return row

    def cancel(self, job_id: str) -> str:
        row = self._active(job_id)
        if row["kind"] == "trial":
            raise QueueError(
                f"{job_id} is a trial of the sweep '{row['parent']}': its sweep decides its "
                f"trials; cancel the sweep (orch queue cancel {row['parent']})"
            )
        if self.store.move(job_id, ("QUEUED", "HELD"), "CANCELLED", ended_at=self.clock()):
            return "CANCELLED"
        if self.store.move(job_id, ("STARTING", "RUNNING", "PREEMPTING"), "CANCELLING"):
            try:
                self.launcher.stop(job_id)
            except Exception as exc:  # noqa: BLE001 - the tick notices the end either way
                self.last_error = f"stop {job_id}: {exc}"
            return "CANCELLING"
        row = self._active(job_id)
        return row["state"]

    def hold(self, job_id: str) -> str:
        self._active(job_id)
        if not self.store.move(job_id, ("QUEUED",), "HELD"):
            raise QueueError(
                f"{job_id} is {self._active(job_id)['state']}: only a QUEUED job can be held"
            )
        return "HELD"

    def release(self, job_id: str) -> str:
        self._active(job_id)
        if not self.store.move(job_id, ("HELD",), "QUEUED"):
            raise QueueError(f"{job_id} is {self._active(job_id)['state']}, not HELD")
        return "QUEUED"

    def bump(self, job_id: str, priority: int) -> int:
        if int(priority) < 0:
            raise QueueError(f"priority {priority}: expected a whole number >= 0")
        row = self._active(job_id)
        if row["state"] in TERMINAL:
            raise QueueError(f"{job_id} has ended ({row['state']})")
        self.store.update(job_id, priority=int(priority))
        if row["kind"] == "sweep":  # its trials wait at its priority
            for t in self.store.jobs(ACTIVE):
                if t["kind"] == "trial" and t["parent"] == job_id:
                    self.store.update(t["id"], priority=int(priority))
        return int(priority)

    # -- trials of a queued sweep: leases --------------------------------------------------

    def enqueue_trial(
        self, parent: str, name: str, workers: int, per_worker: dict[str, float]
    ) -> dict[str, Any]:
        """Queue a trial of the running sweep `parent` for `workers` x `per_worker`. The same
        trial asking again within the same attempt of its sweep gets its row back; asking in a
        later attempt (the sweep resumed) queues it again."""
        sweep = self.store.get(parent)
        if sweep is None or sweep["kind"] != "sweep":
            raise QueueError(f"no queued sweep '{parent}'", ExitCode.NOT_FOUND)
        if sweep["state"] not in ("STARTING", "RUNNING"):
            raise QueueError(f"the sweep '{parent}' is {sweep['state']}, not running")
        problem = policy.never_fits(workers, per_worker, self.launcher.nodes())
        if problem:
            raise QueueError(f"trial {name}: {problem}", ExitCode.RESOURCES)
        tid = f"{parent}/{name}"
        now = self.clock()
        meta = {"parent_attempt": sweep["attempt"]}
        fields = {
            "workers": int(workers),
            "per_worker": per_worker,
            "placement": [],
            "metadata": meta,
            "beat": now,
            "started_at": None,
            "ended_at": None,
            "message": "",
        }
        row, new = self.store.add(
            {
                "id": tid,
                "kind": "trial",
                "parent": parent,
                "queue": sweep["queue"],
                "priority": sweep["priority"],
                "preemptible": sweep["preemptible"],
                "retries": 0,
                "entrypoint": "",
                "runtime_env": {},
                "fingerprint": "",
                "spec": sweep["spec"],
                "run_name": name,
                "storage_path": sweep["storage_path"],
                **fields,
            }
        )
        if new:
            return row
        if row["state"] in ACTIVE and row["metadata"].get("parent_attempt") == sweep["attempt"]:
            self.store.update(tid, beat=now)
            return self.store.get(tid)
        # Left from an earlier attempt of its sweep: that lease is over; this one queues anew.
        if row["state"] in policy.ADMITTED:
            self.store.attempt_ended(tid, row["attempt"], "STOPPED", now)
        self.store.move(
            tid,
            (*ACTIVE, *TERMINAL),
            "QUEUED",
            priority=sweep["priority"],
            queue=sweep["queue"],
            **fields,
        )
        return self.store.get(tid)

    def trial_beat(self, trial_id: str) -> dict[str, Any]:
        """A trial's heartbeat; returns its row (state, why, position)."""
        row = self._active(trial_id)
        if row["state"] in ACTIVE:
            self.store.update(trial_id, beat=self.clock())
        return {k: row[k] for k in ("id", "state", "why", "position", "message")}

    def end_trial(self, trial_id: str, status: str = "SUCCEEDED", message: str = "") -> str:
        """The trial is done with its workers: its lease ends."""
        if status not in TERMINAL:
            raise QueueError(f"status {status}: expected one of {', '.join(TERMINAL)}")
        row = self._active(trial_id)
        now = self.clock()
        if row["state"] in ("QUEUED", "HELD"):
            status = "CANCELLED"
        if self.store.move(trial_id, ACTIVE, status, ended_at=now, message=message[-500:]):
            if row["state"] in policy.ADMITTED:
                self.store.attempt_ended(trial_id, row["attempt"], status, now)
        return self._active(trial_id)["state"]

    def set_queue(self, name: str, **limits: Any) -> dict[str, Any]:
        return self.store.set_queue(name, **limits)

    def delete_queue(self, name: str) -> None:
        self.store.delete_queue(name)

    def queues(self) -> list[dict[str, Any]]:
        usage = self._usage()
        hours = self.store.gpu_hours(self.clock())
        out = []
        for q in self.store.queues():
            use = usage.get(q["name"], {})
            out.append(
                {
                    **q,
                    "cpus_in_use": use.get("CPU", 0.0),
                    "gpus_in_use": use.get("GPU", 0.0),
                    "gpu_hours_24h": hours.get(q["name"], 0.0),
                }
            )
        return out

    def jobs(self, include_ended: bool = True) -> list[dict[str, Any]]:
        rows = self.store.jobs(None if include_ended else ACTIVE)
        return [{k: v for k, v in r.items() if k != "runtime_env"} for r in rows]

    def job(self, job_id: str) -> dict[str, Any]:
        row = self._active(job_id)
        row["attempts"] = self.store.attempts(job_id)
        return row

    def nodes(self) -> dict[str, dict[str, float]]:
        return self.launcher.nodes()

    def _usage(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self.store.jobs(policy.ADMITTED):
            use = out.setdefault(r["queue"], {})
            for k, v in r["per_worker"].items():
                use[k] = use.get(k, 0.0) + v * r["workers"]
        return out

    # -- the tick ------------------------------------------------------------------------

    def tick(self) -> policy.Decision:
        with self._tick_lock:
            return self._tick()

    def _tick(self) -> policy.Decision:
        now = self.clock()
        rows = self.store.jobs(ACTIVE)
        followed = [
            r
            for r in rows
            if r["kind"] != "trial" and r["state"] in (*policy.ADMITTED, "RESTARTING")
        ]
        if followed:
            ray_jobs = self.launcher.statuses()
            for r in followed:
                self._follow(r, ray_jobs.get(r["id"]), now)
        trials = [r for r in rows if r["kind"] == "trial"]
        for r in trials:
            self._follow_trial(r, now)
        if followed or trials:
            rows = self.store.jobs(ACTIVE)
        limits = {
            q["name"]: policy.Limits(q["cpus"], q["gpus"], q["gpu_hours_per_day"])
            for q in self.store.queues()
        }
        decision = policy.decide(
            [_policy_job(r) for r in rows],
            self.launcher.nodes(),
            limits,
            self.store.gpu_hours(now),
        )
        self.store.set_reasons(
            {
                jid: (decision.why.get(jid, "starting"), pos)
                for jid, pos in decision.position.items()
            }
        )
        for jid in decision.preempt:
            self._preempt(jid)
        for jid, placement in decision.start.items():
            self._start(jid, placement, now)
        if now - self._last_expiry > 60.0:
            self._last_expiry = now
            self.expire(now)
        return decision

    def _preempt(self, jid: str) -> None:
        row = self.store.get(jid)
        if row is None:
            return
        if row["kind"] == "trial":  # a trial is stopped with its sweep, which resumes later
            jid = row["parent"]
        if self.store.move(jid, ("STARTING", "RUNNING"), "PREEMPTING"):
            self._trials_preempting(jid)
            try:
                self.launcher.stop(jid)
            except Exception as exc:  # noqa: BLE001 - retried by the next tick's follow
                self.last_error = f"preempt {jid}: {exc}"

    def _trials_preempting(self, sweep_id: str) -> None:
        """The admitted trials of a sweep being preempted: their resources are on the way
        back, so the policy counts them as stopping (and preempts nothing more for them)."""
        for t in self.store.jobs(policy.ADMITTED):
            if t["kind"] == "trial" and t["parent"] == sweep_id:
                self.store.move(t["id"], ("STARTING", "RUNNING"), "PREEMPTING")

    def _follow_trial(self, row: dict[str, Any], now: float) -> None:
        """A trial's lease ends when its sweep's attempt has ended, when its sweep is being
        stopped (a trial still waiting), or when it stopped beating."""
        tid, state = row["id"], row["state"]
        sweep = self.store.get(row["parent"])
        if sweep is None:
            why = "its sweep is gone"
        elif sweep["state"] not in SWEEP_LIVE or sweep["attempt"] != row["metadata"].get(
            "parent_attempt"
        ):
            why = f"its sweep's attempt {row['metadata'].get('parent_attempt')} has ended"
        elif now - (row["beat"] or row["submitted_at"]) > LEASE_TIMEOUT_S:
            silent = now - (row["beat"] or row["submitted_at"])
            why = f"its trial stopped beating {silent:.0f} s ago"
        elif sweep["state"] in ("PREEMPTING", "CANCELLING"):
            if state in ("STARTING", "RUNNING"):  # its resources are on their way back
                self.store.move(tid, (state,), "PREEMPTING")
                return
            if state == "PREEMPTING":
                return
            why = f"its sweep is stopping ({sweep['state']})"
        else:
            return
        end = "CANCELLED" if state in ("QUEUED", "HELD") else "STOPPED"
        if self.store.move(tid, (state,), end, ended_at=now, message=why):
            if state in policy.ADMITTED:
                self.store.attempt_ended(tid, row["attempt"], end, now)

    def _start(self, jid: str, placement: list[str], now: float) -> None:
        row = self.store.get(jid)
        if row is None:
            return
        attempt = row["attempt"] + 1
        # Claimed first, in its own transaction: whatever happens next, the job is started at
        # most once (Ray refuses a second job with this submission id).
        if not self.store.move(
            jid,
            ("QUEUED",),
            "STARTING",
            attempt=attempt,
            placement=placement,
            started_at=now,
            why="",
            position=None,
        ):
            return
        self.store.attempt_started(row, attempt, now)
        if row["kind"] == "trial":  # a lease: the trial process is waiting for it
            self.store.move(jid, ("STARTING",), "RUNNING")
            return
        self._submit(self.store.get(jid))

    def _submit(self, row: dict[str, Any]) -> None:
        jid = row["id"]
        try:
            if row["pkg_uri"]:
                path = self.store.package_path(row["pkg_uri"])
                if path is None:
                    raise QueueError(f"the working dir package {row['pkg_uri']} is gone")
                self.launcher.ensure_package(row["pkg_uri"], path)
            env = dict(row["runtime_env"])
            if row["pkg_uri"]:
                env["working_dir"] = row["pkg_uri"]
            env["env_vars"] = {
                **env.get("env_vars", {}),
                "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S),
                "ORCH_QUEUE_JOB": jid,
                "ORCH_QUEUE_ATTEMPT": str(row["attempt"]),
            }
            if row["kind"] == "sweep":  # its trials ask the queue for their workers
                env["env_vars"]["ORCH_QUEUE_SWEEP"] = jid
            meta = {
                **row["metadata"],
                "orch_queue": row["queue"],
                "orch_queue_attempt": str(row["attempt"]),
            }
            self.launcher.submit(jid, row["entrypoint"], env, meta)
        except Exception as exc:  # noqa: BLE001 - told to the user in the job's message
            if "already exists" in str(exc):  # a restarted service resubmitting: it is there
                self.store.move(jid, ("STARTING",), "RUNNING")
                return
            self.store.attempt_ended(jid, row["attempt"], "FAILED", self.clock())
            self.store.move(
                jid,
                ("STARTING",),
                "FAILED",
                ended_at=self.clock(),
                message=f"could not submit to the Jobs API: {exc}",
            )
            return
        self.store.move(jid, ("STARTING",), "RUNNING")

    def _follow(self, row: dict[str, Any], ray_job: dict[str, Any] | None, now: float) -> None:
        jid, state = row["id"], row["state"]
        if state == "RESTARTING":
            self._requeue(row, now)
            return
        if ray_job is None or (ray_job.get("attempt") not in (None, str(row["attempt"]))):
            if state == "STARTING":  # claimed, not (yet) submitted: submit it now
                self._submit(row)
            elif state in ("CANCELLING",):
                self.store.move(jid, (state,), "CANCELLED", ended_at=now)
            else:  # gone from Ray (a restarted head): back to the queue, it resumes
                self.store.attempt_ended(jid, row["attempt"], "LOST", now)
                self.store.move(
                    jid,
                    (state,),
                    "RESTARTING",
                    message="its Ray job disappeared (head restarted?); queued again",
                )
                self._requeue(self.store.get(jid), now, delete=False)
            return
        status = ray_job["status"]
        if status not in RAY_TERMINAL:
            if state == "STARTING":
                self.store.move(jid, ("STARTING",), "RUNNING")
            return
        logfile = self._archive_log(row)
        self.store.attempt_ended(jid, row["attempt"], status, now, logfile)
        message = ray_job.get("message") or ""
        if status == "SUCCEEDED":
            self.store.move(jid, (state,), "SUCCEEDED", ended_at=now, message="")
        elif state == "CANCELLING":
            self.store.move(jid, (state,), "CANCELLED", ended_at=now, message="cancelled")
        elif state == "PREEMPTING":
            if self.store.move(
                jid,
                (state,),
                "RESTARTING",
                preemptions=row["preemptions"] + 1,
                message=f"preempted {row['preemptions'] + 1} time(s); resumes from its checkpoint",
            ):
                self._requeue(self.store.get(jid), now)
        elif status == "STOPPED":  # stopped outside the queue (orch stop, ray job stop)
            self.store.move(
                jid, (state,), "STOPPED", ended_at=now, message="stopped outside the queue"
            )
        elif row["failures"] < row["retries"]:
            if self.store.move(
                jid,
                (state,),
                "RESTARTING",
                failures=row["failures"] + 1,
                message=f"attempt {row['attempt']} failed; retry {row['failures'] + 1} of "
                f"{row['retries']}: {message[-300:]}",
            ):
                self._requeue(self.store.get(jid), now)
        else:
            self.store.move(
                jid,
                (state,),
                "FAILED",
                ended_at=now,
                failures=row["failures"] + 1,
                message=message[-500:],
            )
        self._write_record(self.store.get(jid))

    def _requeue(self, row: dict[str, Any], now: float, delete: bool = True) -> None:
        """RESTARTING -> QUEUED: Ray's entry for the ended attempt is deleted first, so the
        next attempt runs under the same submission id."""
        if delete:
            if not self.launcher.reusable(row["id"]):
                return  # the next tick tries again
            try:
                self.launcher.delete(row["id"])
            except Exception as exc:  # noqa: BLE001 - gone already is fine
                if "does not exist" not in str(exc) and "no job" not in str(exc):
                    self.last_error = f"delete {row['id']}: {exc}"
                    return  # tried again next tick
        self.store.move(row["id"], ("RESTARTING",), "QUEUED", placement=[], started_at=None)

    # -- records and retention -----------------------------------------------------------

    def archive_dir(self, row: dict[str, Any]) -> str:
        sp = row["storage_path"]
        if rundir.is_uri(sp) or os.path.isabs(sp):
            return rundir.join(sp, "_queue", row["id"])
        return str(self.state_dir / "archive" / row["id"])

    def _archive_log(self, row: dict[str, Any]) -> str:
        try:
            text = self.launcher.logs(row["id"])
            return rundir.write_text(self.archive_dir(row), f"attempt-{row['attempt']}.log", text)
        except Exception as exc:  # noqa: BLE001 - a record without its log beats no record
            self.last_error = f"archive {row['id']}: {exc}"
            return ""

    def _write_record(self, row: dict[str, Any] | None) -> None:
        if row is None:
            return
        try:
            record = {k: v for k, v in row.items() if k != "runtime_env"}
            record["attempts"] = self.store.attempts(row["id"])
            rundir.write_text(
                self.archive_dir(row), "record.json", json.dumps(record, indent=2, default=str)
            )
        except Exception as exc:  # noqa: BLE001
            self.last_error = f"record {row['id']}: {exc}"

    def expire(self, now: float | None = None) -> list[str]:
        """Forget ended jobs past their queue's TTL: the archive, Ray's entry, the row."""
        now = self.clock() if now is None else now
        gone = []
        for row in self.store.expired(now):
            if row["kind"] == "trial":  # nothing kept outside the row
                self.store.forget(row["id"])
                gone.append(row["id"])
                continue
            try:
                rundir.delete(self.archive_dir(row))
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"expire {row['id']}: {exc}"
            try:
                self.launcher.delete(row["id"])
            except Exception:  # noqa: BLE001, S110 - not in Ray any more
                pass
            self.store.forget(row["id"])
            gone.append(row["id"])
        for uri, path in self.store.unused_packages():
            Path(path).unlink(missing_ok=True)
            self.store.drop_package(uri)
        return gone


def _policy_job(r: dict[str, Any]) -> policy.Job:
    return policy.Job(
        id=r["id"],
        queue=r["queue"],
        priority=r["priority"],
        seq=r["seq"],
        workers=r["workers"],
        per_worker=r["per_worker"],
        state=r["state"],
        # A sweep holds nothing itself: its trials are what preemption can free.
        preemptible=r["preemptible"] and r["kind"] != "sweep",
        started_at=r["started_at"] or 0.0,
        placement=r["placement"],
    )


# ---------------------------------------------------------------------------------------------
# Ray: the Jobs API as the launcher, and the actor around the Service


class JobsLauncher:
    """The Jobs API on the head, plus GCS for nodes and working-dir packages."""

    def __init__(self, address: str):
        from orchestrator.cluster.jobs import make_client

        self.address = address
        self.client = make_client(address)
        self._gone_since: dict[str, float] = {}

    def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for j in self.client.list_jobs():
            if j.submission_id:
                out[j.submission_id] = {
                    "status": j.status.value,
                    "message": j.message or "",
                    "attempt": (j.metadata or {}).get("orch_queue_attempt"),
                }
        return out

    def submit(self, sid: str, entrypoint: str, runtime_env: dict, metadata: dict) -> None:
        self.client.submit_job(
            entrypoint=entrypoint,
            submission_id=sid,
            runtime_env=runtime_env,
            metadata=metadata,
        )

    def reusable(self, sid: str) -> bool:
        """May the ended job's id be deleted and submitted again? Not while Ray's job manager
        still watches the ended attempt: its monitor loop (one pass a second) pings the
        attempt's supervisor actor, named after the id, and when that ping fails it marks
        whatever job then holds the id FAILED ("Job supervisor actor died ... exit_actor() is
        called"): a new attempt submitted in that second dies at once. So: the supervisor gone,
        and then REUSE_SETTLE_S for the monitor to notice and end."""
        import ray
        from ray.dashboard.modules.job.common import (
            JOB_ACTOR_NAME_TEMPLATE,
            SUPERVISOR_ACTOR_RAY_NAMESPACE,
        )

        try:
            ray.get_actor(
                JOB_ACTOR_NAME_TEMPLATE.format(job_id=sid), namespace=SUPERVISOR_ACTOR_RAY_NAMESPACE
            )
            self._gone_since.pop(sid, None)
            return False
        except ValueError:
            since = self._gone_since.setdefault(sid, time.monotonic())
            if time.monotonic() - since < REUSE_SETTLE_S:
                return False
            self._gone_since.pop(sid, None)
            return True

    def stop(self, sid: str) -> None:
        self.client.stop_job(sid)

    def delete(self, sid: str) -> None:
        self.client.delete_job(sid)

    def logs(self, sid: str) -> str:
        return self.client.get_job_logs(sid)

    def nodes(self) -> dict[str, dict[str, float]]:
        import ray

        return {
            n["NodeID"]: {
                k: float(v)
                for k, v in n["Resources"].items()
                if not k.startswith("node:") and k not in ("memory", "object_store_memory")
            }
            for n in ray.nodes()
            if n.get("Alive")
        }

    def ensure_package(self, uri: str, path: str) -> None:
        from ray._private.runtime_env.packaging import package_exists, upload_package_to_gcs

        if not package_exists(uri):
            upload_package_to_gcs(uri, Path(path).read_bytes())


def default_state_dir() -> Path:
    """ORCH_QUEUE_DIR, else `orch-queue/` in the head's Ray temp dir (it outlives sessions)."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    return Path(session).resolve().parent / "orch-queue"


def dashboard_address() -> str:
    import ray._private.ray_constants as rc
    from ray.experimental import internal_kv

    url = internal_kv._internal_kv_get(rc.DASHBOARD_ADDRESS, namespace=rc.KV_NAMESPACE_DASHBOARD)
    if not url:
        raise QueueError("the cluster has no dashboard (Jobs API); start the head with it")
    url = url.decode()
    return url if url.startswith("http") else f"http://{url}"


class QueueActor:
    """The actor: one Service, a thread ticking it, and `call(method, ...)` for clients
    (user errors come back as ("error", text), not as a Ray task error)."""

    def __init__(self, state_dir: str | None = None, tick_s: float | None = None):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.service = Service(
            Store(self.state_dir / "queue.db"), JobsLauncher(dashboard_address()), self.state_dir
        )
        self.tick_s = float(tick_s or os.environ.get(TICK_ENV, "1.0"))
        self.started = time.time()
        self._thread = threading.Thread(target=self._loop, name="orch-queue", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self.service.tick()
            except Exception:  # noqa: BLE001 - keep ticking; the error is shown by orch queue
                self.service.last_error = traceback.format_exc(limit=3)
            time.sleep(self.tick_s)

    def call(self, method: str, *args: Any, **kwargs: Any):
        if method.startswith("_") or method in ("store", "launcher"):
            return ("error", f"no method {method}")
        try:
            fn = getattr(self.service, method)
            return ("ok", fn(*args, **kwargs))
        except QueueError as exc:
            return ("error", str(exc), exc.code)

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "state_dir": str(self.state_dir),
            "jobs_address": self.service.launcher.address,
            "started": self.started,
            "tick_s": self.tick_s,
            "last_error": self.service.last_error,
        }
