"""The queue's state: one SQLite file on the head (WAL, every change in one IMMEDIATE
transaction). A job moves between states only by compare-and-set (`move`), so two ticks, a
tick and a `cancel`, or a restarted service never both act on one job.

States:  QUEUED -> STARTING -> RUNNING -> SUCCEEDED | FAILED | STOPPED
                 HELD <-> QUEUED;  RUNNING -> PREEMPTING -> RESTARTING -> QUEUED (resumes later)
                 RUNNING (failed, retries left) -> RESTARTING -> QUEUED
                 * -> CANCELLING -> CANCELLED
A job is written (QUEUED) before `enqueue` returns, and marked STARTING, in its own transaction,
before the Jobs API is asked to start it under its id: a service killed at any point finds on
restart either a job Ray never saw (it submits it, once: Ray refuses a second job with that
submission id) or one Ray has (it follows it).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from orchestrator import sqlitedb
from orchestrator.errors import ExitCode

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "CANCELLED")
ACTIVE = ("QUEUED", "HELD", "STARTING", "RUNNING", "PREEMPTING", "CANCELLING", "RESTARTING")
DEFAULT_QUEUE = "default"
DEFAULT_TTL_S = 7 * 24 * 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    preemptible INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    preemptions INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    workers INTEGER NOT NULL,
    per_worker TEXT NOT NULL,
    placement TEXT NOT NULL DEFAULT '[]',
    entrypoint TEXT NOT NULL,
    runtime_env TEXT NOT NULL,
    metadata TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    spec TEXT NOT NULL,
    run_name TEXT NOT NULL,
    storage_path TEXT NOT NULL,
    pkg_uri TEXT NOT NULL DEFAULT '',
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    why TEXT NOT NULL DEFAULT '',
    position INTEGER,
    message TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'job',
    parent TEXT NOT NULL DEFAULT '',
    beat REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL DEFAULT 'RUNNING',
    gpus REAL NOT NULL DEFAULT 0,
    queue TEXT NOT NULL,
    log TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    cpus REAL,
    gpus REAL,
    gpu_hours_per_day REAL,
    ttl_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS packages (
    uri TEXT PRIMARY KEY,
    path TEXT NOT NULL
);
"""

JSON_COLS = ("per_worker", "placement", "runtime_env", "metadata")
# Columns added after the first release: a state file written by an older queue gets them.
# kind: 'job' (a Ray job), 'sweep' (a Ray job whose trials queue one by one) or 'trial' (a
# sweep's trial: a lease on resources, no Ray job of its own); parent: a trial's sweep; beat:
# a trial's last heartbeat.
ADDED_COLUMNS = {
    "kind": "TEXT NOT NULL DEFAULT 'job'",
    "parent": "TEXT NOT NULL DEFAULT ''",
    "beat": "REAL",
}


class QueueError(Exception):
    """Bad input to the queue (unknown queue or job, a job that can never fit, ...). `code`
    is the exit code it means (orchestrator.errors.ExitCode); clients get it with the text."""

    def __init__(self, text: str, code: int = 2):
        super().__init__(text)
        self.code = int(code)


def _row(r: sqlite3.Row | None) -> dict[str, Any] | None:
    if r is None:
        return None
    d = dict(r)
    for k in JSON_COLS:
        if k in d:
            d[k] = json.loads(d[k])
    if "preemptible" in d:
        d["preemptible"] = bool(d["preemptible"])
    return d


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        sqlitedb.create(self.path, SCHEMA, {"jobs": ADDED_COLUMNS})
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO queues (name, ttl_s) VALUES (?, ?)",
                (DEFAULT_QUEUE, DEFAULT_TTL_S),
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlitedb.connect(self.path, synchronous_full=True)

    def tx(self):
        """One BEGIN IMMEDIATE transaction, fsynced at commit."""
        return sqlitedb.transaction(self.path, synchronous_full=True)

    # -- queues --------------------------------------------------------------------------

    def set_queue(
        self,
        name: str,
        cpus: float | None = None,
        gpus: float | None = None,
        gpu_hours_per_day: float | None = None,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        with self.tx() as db:
            old = db.execute("SELECT * FROM queues WHERE name=?", (name,)).fetchone()
            row = dict(old) if old else {"name": name, "ttl_s": DEFAULT_TTL_S}
            for k, v in (
                ("cpus", cpus),
                ("gpus", gpus),
                ("gpu_hours_per_day", gpu_hours_per_day),
                ("ttl_s", ttl_s),
            ):
                if v is not None:
                    row[k] = None if v < 0 else v  # a negative value lifts the limit
            db.execute(
                "INSERT OR REPLACE INTO queues (name, cpus, gpus, gpu_hours_per_day, ttl_s) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    name,
                    row.get("cpus"),
                    row.get("gpus"),
                    row.get("gpu_hours_per_day"),
                    row.get("ttl_s") or DEFAULT_TTL_S,
                ),
            )
        return self.queue(name)

    def queue(self, name: str) -> dict[str, Any] | None:
        with closing(self._connect()) as db:
            r = db.execute("SELECT * FROM queues WHERE name=?", (name,)).fetchone()
        return dict(r) if r else None

    def queues(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute("SELECT * FROM queues ORDER BY name")]

    def delete_queue(self, name: str) -> None:
        with self.tx() as db:
            if name == DEFAULT_QUEUE:
                raise QueueError("the default queue cannot be deleted")
            if not db.execute("SELECT 1 FROM queues WHERE name=?", (name,)).fetchone():
                raise QueueError(f"no queue '{name}'", ExitCode.NOT_FOUND)
            busy = db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE queue=? AND state IN ({_q(ACTIVE)})",
                (name, *ACTIVE),
            ).fetchone()[0]
            if busy:
                raise QueueError(
                    f"queue '{name}' still has {busy} job(s) waiting or running; cancel them first"
                )
            db.execute("DELETE FROM queues WHERE name=?", (name,))

    # -- jobs ----------------------------------------------------------------------------

    def add(self, job: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Insert a QUEUED job; (the job, True). An existing id: (that job, False)."""
        with self.tx() as db:
            old = db.execute("SELECT * FROM jobs WHERE id=?", (job["id"],)).fetchone()
            if old is not None:
                return _row(old), False
            if not db.execute("SELECT 1 FROM queues WHERE name=?", (job["queue"],)).fetchone():
                names = [r[0] for r in db.execute("SELECT name FROM queues ORDER BY name")]
                raise QueueError(
                    f"no queue '{job['queue']}'; the queues are {', '.join(names)} "
                    f"(orch queue create {job['queue']} to make it)"
                )
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            row = {
                "state": "QUEUED",
                "submitted_at": time.time(),
                **job,
                "seq": seq,
            }
            for k in JSON_COLS:
                if k in row:
                    row[k] = json.dumps(row[k])
            cols = ", ".join(row)
            db.execute(
                f"INSERT INTO jobs ({cols}) VALUES ({_q(row)})",
                tuple(row.values()),
            )
            new = db.execute("SELECT * FROM jobs WHERE id=?", (job["id"],)).fetchone()
        return _row(new), True

    def get(self, job_id: str) -> dict[str, Any] | None:
        with closing(self._connect()) as db:
            return _row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def jobs(self, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            if states:
                rows = db.execute(
                    f"SELECT * FROM jobs WHERE state IN ({_q(states)}) ORDER BY seq", states
                )
            else:
                rows = db.execute("SELECT * FROM jobs ORDER BY seq")
            return [_row(r) for r in rows]

    def move(self, job_id: str, from_states: tuple[str, ...], to: str, **fields: Any) -> bool:
        """Compare-and-set: the job goes to `to` (with `fields`) only if its state is one of
        `from_states`. True if it moved."""
        sets = {"state": to, **fields}
        for k in JSON_COLS:
            if k in sets:
                sets[k] = json.dumps(sets[k])
        assign = ", ".join(f"{k}=?" for k in sets)
        with self.tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {assign} WHERE id=? AND state IN ({_q(from_states)})",
                (*sets.values(), job_id, *from_states),
            )
            return cur.rowcount == 1

    def update(self, job_id: str, **fields: Any) -> None:
        """Fields that carry no state (why, position, priority, message)."""
        assign = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as db:
            db.execute(f"UPDATE jobs SET {assign} WHERE id=?", (*fields.values(), job_id))

    def set_reasons(self, reasons: dict[str, tuple[str, int | None]]) -> None:
        with self.tx() as db:
            db.executemany(
                "UPDATE jobs SET why=?, position=? WHERE id=?",
                [(why, pos, jid) for jid, (why, pos) in reasons.items()],
            )

    # -- attempts (for GPU-hours and the record) -----------------------------------------

    def attempt_started(self, job: dict[str, Any], attempt: int, now: float) -> None:
        gpus = float(job["per_worker"].get("GPU", 0.0)) * int(job["workers"])
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, attempt, started_at, gpus, queue) "
                "VALUES (?, ?, ?, ?, ?)",
                (job["id"], attempt, now, gpus, job["queue"]),
            )

    def attempt_ended(
        self, job_id: str, attempt: int, status: str, now: float, log: str = ""
    ) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE attempts SET ended_at=?, status=?, log=? WHERE job_id=? AND attempt=? "
                "AND ended_at IS NULL",
                (now, status, log, job_id, attempt),
            )

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            return [
                dict(r)
                for r in db.execute(
                    "SELECT * FROM attempts WHERE job_id=? ORDER BY attempt", (job_id,)
                )
            ]

    def gpu_hours(self, now: float, window_s: float = 24 * 3600.0) -> dict[str, float]:
        """GPU-hours each queue's attempts used in the last `window_s` (running ones so far)."""
        since = now - window_s
        out: dict[str, float] = {}
        with closing(self._connect()) as db:
            for r in db.execute(
                "SELECT queue, gpus, started_at, ended_at FROM attempts WHERE gpus > 0 "
                "AND (ended_at IS NULL OR ended_at > ?)",
                (since,),
            ):
                start = max(r["started_at"], since)
                end = r["ended_at"] if r["ended_at"] is not None else now
                out[r["queue"]] = (
                    out.get(r["queue"], 0.0) + r["gpus"] * max(0.0, end - start) / 3600
                )
        return out

    # -- packages (working dirs kept until no job needs them) ------------------------------

    def add_package(self, uri: str, path: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO packages (uri, path) VALUES (?, ?)", (uri, path))

    def package_path(self, uri: str) -> str | None:
        with closing(self._connect()) as db:
            r = db.execute("SELECT path FROM packages WHERE uri=?", (uri,)).fetchone()
        return r[0] if r else None

    def unused_packages(self) -> list[tuple[str, str]]:
        with closing(self._connect()) as db:
            return [
                (r[0], r[1])
                for r in db.execute(
                    "SELECT uri, path FROM packages WHERE uri NOT IN "
                    f"(SELECT pkg_uri FROM jobs WHERE state IN ({_q(ACTIVE)}))",
                    ACTIVE,
                )
            ]

    def drop_package(self, uri: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM packages WHERE uri=?", (uri,))

    # -- retention -----------------------------------------------------------------------

    def expired(self, now: float) -> list[dict[str, Any]]:
        """Ended jobs older than their queue's TTL."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT jobs.* FROM jobs LEFT JOIN queues ON jobs.queue = queues.name "
                f"WHERE jobs.state IN ({_q(TERMINAL)}) AND jobs.ended_at IS NOT NULL "
                "AND jobs.ended_at < ? - COALESCE(queues.ttl_s, ?)",
                (*TERMINAL, now, DEFAULT_TTL_S),
            )
            return [_row(r) for r in rows]

    def forget(self, job_id: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            db.execute("DELETE FROM attempts WHERE job_id=?", (job_id,))


def _q(items) -> str:
    return ", ".join("?" for _ in items)
