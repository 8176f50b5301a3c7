"""Scheduled sweeps: cron schedules in SQLite, a scheduler loop, sweeps with memory.

    orch schedule add jobs/mnist_mlp.yaml --cron "0 3 * * *"        # nightly sweep of this spec
    orch schedule add jobs/mnist_mlp.yaml --cron "*/30 * * * *" --name mnist-30m \\
        --missed run_once --concurrency forbid sweep.num_samples=8
    orch schedule list
    orch schedule run-now mnist-mlp          # a fire now, outside the cron times
    orch schedule remove mnist-mlp
    orch scheduler                           # the loop; run it on the head node (or as a Ray job)

The spec's optional `schedule:` section gives the defaults (flags override it):

    schedule:
      cron: "0 3 * * *"      # five-field cron, evaluated in UTC (croniter)
      missed: skip           # fires missed while the scheduler was down: skip | run_once
      concurrency: forbid    # a fire while this schedule's previous sweep still runs:
                             #   forbid (skip the new one) | allow | replace (stop the old one)
      warm_start: 3          # seed the sweep with the best configs of up to N previous sweeps
      promote: true          # champion row in the ledger when a sweep beats the champion
      misfire_grace_s: 60    # a fire this late still counts as on time

Guarantees. Schedules and fires live in one SQLite file (default `runs/_schedules.db`,
`--db` or ORCH_SCHEDULE_DB). A fire is claimed in one IMMEDIATE transaction that inserts the
fire row (unique per schedule and fire time) and moves the schedule's next fire time, so two
schedulers or a restart never fire the same time twice, and a claimed fire is never lost: a
fire claimed but not started is started on the next tick; one whose process died mid-sweep
is continued with `orch sweep --resume` (Tuner.restore), not started again.

Sweeps with memory: each fire's sweep id is `<schedule>-<fire time>`; its searcher gets
`points_to_evaluate` = the best configs of the previous successful sweeps of the same
schedule (from the ledger), each run once within num_samples, the other samples left to the
search algorithm (orchestrator/sweep/tune.py's seed_points); its best trial becomes the
`champion` (a ledger row, kind="champion") only if it beats the current champion on the
sweep's metric. A spec's `sweep.seed` seeds each fire's searcher differently
(`fire_seed(seed, sweep_id)`, recorded in the fire's sweep.json): with the one seed every fire
drew the same configs again, the previous champion among them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator import sqlitedb
from orchestrator.errors import ExitCode, OrchestratorError

DEFAULT_DB = "runs/_schedules.db"
MAX_ATTEMPTS = 3  # a fire whose process dies is continued at most this many times


class ScheduleError(OrchestratorError):
    """A schedule cannot be added, found or run."""

    exit_code = ExitCode.FAILED


class ScheduleNotFoundError(ScheduleError):
    """No schedule (or fire) of that id."""

    exit_code = ExitCode.NOT_FOUND


class ScheduleExistsError(ScheduleError):
    """A schedule of that id exists already."""

    exit_code = ExitCode.CONFLICT


def _valid_cron(expr: str) -> str:
    from croniter import croniter

    if not croniter.is_valid(expr) or len(expr.split()) != 5:
        raise ValueError(
            f"expected a five-field cron expression such as '0 3 * * *' (given: {expr!r})"
        )
    return expr


class ScheduleSpec(BaseModel):
    """The `schedule:` section of a job spec."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, description="Five-field cron, UTC, e.g. '0 3 * * *'.")
    missed: Literal["skip", "run_once"] = Field("skip", description="Fires missed while down.")
    concurrency: Literal["forbid", "allow", "replace"] = Field(
        "forbid", description="A fire while the previous sweep of this schedule still runs."
    )
    warm_start: int = Field(3, ge=0, le=100, description="Best configs of previous sweeps to seed.")
    promote: bool = Field(True, description="Record a champion when a sweep beats it.")
    misfire_grace_s: float = Field(60.0, ge=0, le=86400 * 7, description="Late but on time.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else _valid_cron(v)


# ---------------------------------------------------------------------------------------------
# Clock and cron


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def next_fire(cron: str, after: float) -> float:
    """The first cron time strictly after `after` (epoch seconds, UTC)."""
    from croniter import croniter

    base = datetime.fromtimestamp(after, tz=timezone.utc)
    return float(croniter(cron, base).get_next(float))


def fire_times(cron: str, start: float, end: float, limit: int = 100_000) -> list[float]:
    """Cron times t with start <= t <= end."""
    out, t = [], next_fire(cron, start - 1e-3)
    while t <= end and len(out) < limit:
        out.append(t)
        t = next_fire(cron, t)
    return out


def iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------
# The store


SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    spec_path TEXT NOT NULL,
    overrides TEXT NOT NULL DEFAULT '[]',
    cron TEXT NOT NULL,
    missed TEXT NOT NULL,
    concurrency TEXT NOT NULL,
    warm_start INTEGER NOT NULL,
    promote INTEGER NOT NULL,
    misfire_grace_s REAL NOT NULL,
    address TEXT,
    created REAL NOT NULL,
    next_fire REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fires (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id TEXT NOT NULL,
    fire_time REAL NOT NULL,          -- the cron time this fire is for (or now, for run-now)
    claimed_at REAL NOT NULL,
    -- claimed | running | succeeded | failed | skipped | forbidden | replaced | stopped
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    sweep_id TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    ended_at REAL,
    UNIQUE (schedule_id, fire_time)
);
"""

ACTIVE = ("claimed", "running")
# Columns added after the first release (a schedule file written before gets them): a schedule
# with a queue fires through the cluster's queue (QueueRunner), from its working dir.
ADDED_COLUMNS = {"queue": "TEXT", "priority": "INTEGER", "working_dir": "TEXT"}


@dataclass
class Schedule:
    id: str
    spec_path: str
    overrides: list[str]
    cron: str
    missed: str
    concurrency: str
    warm_start: int
    promote: bool
    misfire_grace_s: float
    address: str | None
    created: float
    next_fire: float
    queue: str | None = None  # fires go through this queue of the cluster (QueueRunner)
    priority: int | None = None
    working_dir: str | None = None  # uploaded with each queued fire


@dataclass
class Fire:
    id: int
    schedule_id: str
    fire_time: float
    claimed_at: float
    status: str
    reason: str
    sweep_id: str
    pid: int | None
    attempts: int
    started_at: float | None
    ended_at: float | None


def sweep_id_for(schedule_id: str, fire_time: float) -> str:
    stamp = datetime.fromtimestamp(fire_time, tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{schedule_id}-{stamp}"


class Store:
    """Schedules and fires in SQLite. Every state change is one transaction."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        sqlitedb.create(self.path, SCHEMA, {"schedules": ADDED_COLUMNS})

    def _connect(self) -> sqlite3.Connection:
        return sqlitedb.connect(self.path)

    def _tx(self):
        """One BEGIN IMMEDIATE transaction: read-then-write is atomic."""
        return sqlitedb.transaction(self.path)

    # -- schedules -----------------------------------------------------------------------

    def add(self, s: Schedule) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM schedules WHERE id=?", (s.id,)).fetchone():
                raise ScheduleExistsError(
                    f"schedule '{s.id}' exists already; remove it first "
                    f"(orch schedule remove {s.id}) or choose another --name"
                )
            row = {
                **s.__dict__,
                "overrides": json.dumps(s.overrides),
                "promote": int(s.promote),
            }
            db.execute(
                f"INSERT INTO schedules ({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                tuple(row.values()),
            )

    def remove(self, schedule_id: str) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM schedules WHERE id=?", (schedule_id,))
            if cur.rowcount == 0:
                raise ScheduleNotFoundError(
                    f"no schedule '{schedule_id}' (orch schedule list shows them)"
                )

    def get(self, schedule_id: str) -> Schedule:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM schedules WHERE id=?", (schedule_id,)).fetchone()
        if row is None:
            raise ScheduleNotFoundError(
                f"no schedule '{schedule_id}' (orch schedule list shows them)"
            )
        return _schedule(row)

    def schedules(self) -> list[Schedule]:
        with closing(self._connect()) as db:
            return [_schedule(r) for r in db.execute("SELECT * FROM schedules ORDER BY id")]

    # -- fires ---------------------------------------------------------------------------

    def fires(
        self, schedule_id: str | None = None, status: tuple[str, ...] | None = None
    ) -> list[Fire]:
        q, args = "SELECT * FROM fires WHERE 1=1", []
        if schedule_id is not None:
            q += " AND schedule_id=?"
            args.append(schedule_id)
        if status:
            q += f" AND status IN ({','.join('?' * len(status))})"
            args.extend(status)
        with closing(self._connect()) as db:
            return [Fire(**dict(r)) for r in db.execute(q + " ORDER BY id", args)]

    def fire(self, fire_id: int) -> Fire:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM fires WHERE id=?", (fire_id,)).fetchone()
        if row is None:
            raise ScheduleNotFoundError(f"no fire {fire_id}")
        return Fire(**dict(row))

    def claim_due(self, schedule_id: str, now: float) -> list[Fire]:
        """Claim what is due for one schedule, atomically. Returns the new fire rows: one
        'claimed' fire to run (or none), plus a 'skipped' row recording missed fires."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM schedules WHERE id=?", (schedule_id,)).fetchone()
            if row is None:
                return []
            s = _schedule(row)
            if s.next_fire > now:
                return []
            due = fire_times(s.cron, s.next_fire, now)
            on_time = [t for t in due if now - t <= s.misfire_grace_s]
            missed = [t for t in due if now - t > s.misfire_grace_s]
            out: list[tuple[float, str, str]] = []
            if on_time:
                run_at = on_time[-1]
            elif missed and s.missed == "run_once":
                run_at = missed[-1]
            else:
                run_at = None
            skipped = [t for t in missed if t != run_at]
            if skipped:
                out.append(
                    (
                        skipped[-1],
                        "skipped",
                        f"missed {len(skipped)} fire(s) from {iso(skipped[0])} to "
                        f"{iso(skipped[-1])} while the scheduler was down (missed: {s.missed})",
                    )
                )
            if run_at is not None:
                why = (
                    "on time"
                    if run_at in on_time
                    else (f"run once for {len(missed)} missed fire(s) (missed: run_once)")
                )
                out.append((run_at, "claimed", why))
            fires = []
            for t, status, reason in out:
                cur = db.execute(
                    "INSERT OR IGNORE INTO fires (schedule_id, fire_time, claimed_at, status,"
                    " reason, sweep_id) VALUES (?,?,?,?,?,?)",
                    (s.id, t, now, status, reason, sweep_id_for(s.id, t)),
                )
                if cur.rowcount:
                    fires.append(
                        Fire(
                            **dict(
                                db.execute(
                                    "SELECT * FROM fires WHERE id=?", (cur.lastrowid,)
                                ).fetchone()
                            )
                        )
                    )
            db.execute(
                "UPDATE schedules SET next_fire=? WHERE id=?", (next_fire(s.cron, now), s.id)
            )
            return fires

    def claim_now(self, schedule_id: str, now: float) -> Fire:
        """A fire outside the cron times (orch schedule run-now)."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM schedules WHERE id=?", (schedule_id,)).fetchone():
                raise ScheduleNotFoundError(
                    f"no schedule '{schedule_id}' (orch schedule list shows them)"
                )
            t = now
            while db.execute(
                "SELECT 1 FROM fires WHERE schedule_id=? AND fire_time=?", (schedule_id, t)
            ).fetchone():
                t += 1.0
            cur = db.execute(
                "INSERT INTO fires (schedule_id, fire_time, claimed_at, status, reason, sweep_id)"
                " VALUES (?,?,?,?,?,?)",
                (schedule_id, t, now, "claimed", "run-now", sweep_id_for(schedule_id, t)),
            )
            return Fire(
                **dict(db.execute("SELECT * FROM fires WHERE id=?", (cur.lastrowid,)).fetchone())
            )

    def mark(
        self, fire_id: int, status: str, *, expect: tuple[str, ...] | None = None, **fields: Any
    ) -> bool:
        """Set a fire's status (and fields) if its status is one of `expect`. True if it did."""
        sets = ", ".join(["status=?"] + [f"{k}=?" for k in fields])
        q = f"UPDATE fires SET {sets} WHERE id=?"
        args: list[Any] = [status, *fields.values(), fire_id]
        if expect:
            q += f" AND status IN ({','.join('?' * len(expect))})"
            args.extend(expect)
        with self._tx() as db:
            return db.execute(q, args).rowcount == 1

    def launched(self, fire_id: int, pid: int | None, now: float) -> bool:
        """The scheduler started a process for the fire: running, pid, one more attempt."""
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE fires SET status='running', pid=?, attempts=attempts+1,"
                    " started_at=COALESCE(started_at, ?)"
                    " WHERE id=? AND status IN ('claimed','running')",
                    (pid or 0, now, fire_id),
                ).rowcount
                == 1
            )

    def start_attempt(self, fire_id: int, pid: int, now: float) -> Fire | None:
        """The fire's own process takes it over (claimed/running -> running with its pid);
        None if the fire has ended (succeeded, failed, replaced...)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE fires SET status='running', pid=?, attempts=MAX(attempts, 1),"
                " started_at=COALESCE(started_at, ?)"
                " WHERE id=? AND status IN ('claimed','running')",
                (pid, now, fire_id),
            )
            if cur.rowcount != 1:
                return None
            return Fire(**dict(db.execute("SELECT * FROM fires WHERE id=?", (fire_id,)).fetchone()))


def _schedule(row: sqlite3.Row) -> Schedule:
    d = dict(row)
    d["overrides"] = json.loads(d["overrides"] or "[]")
    d["promote"] = bool(d["promote"])
    return Schedule(**d)


# ---------------------------------------------------------------------------------------------
# Running fires


class Runner(Protocol):
    """Starts a fire's sweep somewhere and tells whether it still runs."""

    def start(self, fire: Fire, resume: bool) -> int | None: ...

    def alive(self, fire: Fire) -> bool: ...

    def stop(self, fire: Fire) -> None: ...


def pid_alive(pid: int | None) -> bool:
    from orchestrator.ledger import pid_alive as alive  # pyarrow stays out of CLI start-up

    return alive(pid)


class SubprocessRunner:
    """Each fire runs as `orch schedule fire FIRE_ID` in its own process group, logging to
    `<db dir>/schedule-logs/fire-<id>.log`. The fire process records its own pid and end."""

    def __init__(self, db: str):
        self.db = db
        self.logs = Path(db).resolve().parent / "schedule-logs"
        self.children: dict[int, subprocess.Popen] = {}

    def start(self, fire: Fire, resume: bool) -> int | None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"fire-{fire.id}.log", "a")  # noqa: SIM115 - the child owns it
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "schedule",
            "fire",
            str(fire.id),
            "--db",
            self.db,
        ]
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children[fire.id] = child
        return child.pid

    def alive(self, fire: Fire) -> bool:
        child = self.children.get(fire.id)
        if child is not None:
            if child.poll() is None:
                return True
            self.children.pop(fire.id, None)
            return False
        return pid_alive(fire.pid)

    def stop(self, fire: Fire) -> None:
        child = self.children.get(fire.id)
        pid = child.pid if child is not None else fire.pid
        if pid and pid_alive(pid):
            try:
                os.killpg(os.getpgid(pid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


class QueueRunner:
    """Fires of a schedule with a queue go through the cluster's queue: each is the queued
    sweep `orch sweep SPEC --name SWEEP_ID --continue --schedule-id S ...` under the id
    SWEEP_ID (so a scheduler that restarts and submits again finds it there), its working dir
    uploaded, and each of its trials waits in the queue for its own workers
    (orchestrator/queue/lease.py). The queue says how it ended."""

    def __init__(self, store: Store, address: str | None = None, call=None):
        self.store = store
        self.address = address
        self._call_fn = call  # tests: a stand-in for the queue actor

    def _call(self, method: str, *args: Any) -> Any:
        if self._call_fn is not None:
            return self._call_fn(method, *args)
        from orchestrator.queue import client

        client.connect(self.address)
        return client.call(client.handle(), method, *args)

    def job(
        self, s: Schedule, sweep_id: str, uploaded: bool = True
    ) -> tuple[dict, bytes | None, str]:
        """The queued job of a fire (validated), with its working dir's package."""
        from orchestrator.cluster.jobs import DEFAULT_MAX_UPLOAD_MB
        from orchestrator.queue import client

        args = ["--schedule-id", s.id, "--warm-start", str(s.warm_start)]
        args.append("--promote" if s.promote else "--no-promote")
        job, wd, excl = client.queued_job(
            s.spec_path,
            s.overrides,
            s.working_dir or str(Path(s.spec_path).parent),
            [],
            DEFAULT_MAX_UPLOAD_MB,
            s.queue,
            s.priority,
            None,
            None,
            sweep_id,
            sweep_id,
            sweep=True,
            sweep_args=args,
        )
        if not uploaded:
            return job, None, ""
        uri, data = client.pack_working_dir(wd, excl)
        return job, data, uri

    def start(self, fire: Fire, resume: bool) -> int | None:
        s = self.store.get(fire.schedule_id)
        job, data, uri = self.job(s, fire.sweep_id)
        self._call("enqueue", job, uri, data)  # the same id again: the job already there
        return None

    def _row(self, fire: Fire) -> dict[str, Any] | None:
        from orchestrator.errors import ExitCode

        try:
            return self._call("job", fire.sweep_id)
        except OrchestratorError as exc:
            if getattr(exc, "exit_code", None) == ExitCode.NOT_FOUND:
                return None
            raise

    def state(self, fire: Fire) -> str | None:
        """The queued sweep's state in the queue (None: the queue does not have it)."""
        row = self._row(fire)
        return None if row is None else row["state"]

    def alive(self, fire: Fire) -> bool:
        from orchestrator.queue.store import ACTIVE as QUEUE_ACTIVE

        return self.state(fire) in QUEUE_ACTIVE

    def stop(self, fire: Fire) -> None:
        self._call("cancel", fire.sweep_id)

    def ended(self, fire: Fire) -> tuple[str, str] | None:
        """(fire status, reason) once the queued sweep has ended; None when the queue does not
        have it (the scheduler then submits it again, and the sweep continues)."""
        row = self._row(fire)
        if row is None or row["state"] not in ("SUCCEEDED", "FAILED", "STOPPED", "CANCELLED"):
            return None
        if row["state"] != "SUCCEEDED":
            status = {"FAILED": "failed"}.get(row["state"], "stopped")
            return status, f"queued sweep {row['state']}: {row.get('message') or ''}".strip()
        return "succeeded", self._best(fire)

    def _best(self, fire: Fire) -> str:
        from orchestrator import rundir
        from orchestrator.sweep.spec import BEST_FILE

        try:
            from orchestrator.spec import load_spec

            s = self.store.get(fire.schedule_id)
            storage = rundir.resolve_storage(load_spec(s.spec_path, s.overrides).storage_path)
            best = rundir.read_json(rundir.join(storage, fire.sweep_id), BEST_FILE) or {}
            champ = current_champion(storage, s.id)
            best["promoted"] = bool(champ and champ["sweep_id"] == fire.sweep_id)
            return fire_reason(best)
        except Exception as exc:  # noqa: BLE001 - the fire succeeded; only its summary is missing
            return f"succeeded in the queue (its best.json could not be read: {exc})"


class RoutingRunner:
    """Fires of schedules with a queue through QueueRunner, the others as local processes."""

    def __init__(self, store: Store, local: Runner, queued: QueueRunner):
        self.store, self.local, self.queued = store, local, queued

    def _for(self, fire: Fire):
        try:
            return self.queued if self.store.get(fire.schedule_id).queue else self.local
        except ScheduleError:
            return self.local

    def start(self, fire: Fire, resume: bool) -> int | None:
        return self._for(fire).start(fire, resume)

    def alive(self, fire: Fire) -> bool:
        return self._for(fire).alive(fire)

    def stop(self, fire: Fire) -> None:
        self._for(fire).stop(fire)

    def ended(self, fire: Fire) -> tuple[str, str] | None:
        fn = getattr(self._for(fire), "ended", None)
        return fn(fire) if fn else None


class Scheduler:
    """One tick: reap ended fires, continue interrupted ones, claim and start due ones."""

    def __init__(self, store: Store, runner: Runner, clock: Clock | None = None, log=print):
        self.store, self.runner = store, runner
        self.clock = clock or SystemClock()
        self.log = log

    def tick(self) -> list[Fire]:
        """Returns the fires started (or continued) in this tick."""
        now = self.clock.now()
        started: list[Fire] = []
        self._recover(started)
        for s in self.store.schedules():
            for f in self.store.claim_due(s.id, now):
                if f.status == "skipped":
                    self.log(f"[scheduler] {s.id}: {f.reason}")
                    continue
                if self._apply_concurrency(s, f):
                    started.append(self._start(f, resume=False))
        return started

    def _recover(self, started: list[Fire]) -> None:
        """Claimed fires never started are started now; running fires whose process is gone
        are continued (the sweep resumes), up to MAX_ATTEMPTS."""
        for f in self.store.fires(status=ACTIVE):
            if f.status == "claimed":
                s = self._schedule(f)
                if s is None or self._apply_concurrency(s, f):
                    started.append(self._start(f, resume=False))
            elif f.status == "running" and not self.runner.alive(f):
                again = self.settle(f)
                if again is not None:
                    started.append(again)

    def settle(self, f: Fire) -> Fire | None:
        """A running fire whose sweep no longer runs where it was started: record its end when
        the runner knows it (the queue), else continue it (up to MAX_ATTEMPTS). Returns the
        fire when it was started again."""
        ended = getattr(self.runner, "ended", None)
        out = ended(f) if ended else None
        if out is not None:  # it ran elsewhere (the queue), which says how it ended
            status, reason = out
            self.store.mark(
                f.id, status, expect=("running",), ended_at=self.clock.now(), reason=reason
            )
            self.log(f"[scheduler] fire {f.id} ({f.sweep_id}) {status}: {reason}")
            return None
        if f.attempts >= MAX_ATTEMPTS:
            self.store.mark(
                f.id,
                "failed",
                expect=("running",),
                ended_at=self.clock.now(),
                reason=f"process died {f.attempts} time(s); giving up",
            )
            self.log(
                f"[scheduler] fire {f.id} ({f.sweep_id}) failed: process died {f.attempts} time(s)"
            )
            return None
        self.log(f"[scheduler] fire {f.id} ({f.sweep_id}): its process is gone; resuming the sweep")
        return self._start(f, resume=True)

    def _schedule(self, f: Fire) -> Schedule | None:
        try:
            return self.store.get(f.schedule_id)
        except ScheduleError:
            return None

    def _apply_concurrency(self, s: Schedule, f: Fire) -> bool:
        """True if `f` may start now, by the schedule's concurrency policy."""
        running = [
            o
            for o in self.store.fires(s.id, status=ACTIVE)
            if o.id != f.id and o.status == "running" and self.runner.alive(o)
        ]
        if not running or s.concurrency == "allow":
            return True
        if s.concurrency == "forbid":
            ids = ", ".join(o.sweep_id for o in running)
            self.store.mark(
                f.id,
                "forbidden",
                expect=("claimed",),
                ended_at=self.clock.now(),
                reason=f"previous sweep still running ({ids}); concurrency: forbid",
            )
            self.log(
                f"[scheduler] {s.id}: skipped fire {iso(f.fire_time)}: {ids} still running "
                "(concurrency: forbid)"
            )
            return False
        for o in running:  # replace
            self.runner.stop(o)
            self.store.mark(
                o.id,
                "replaced",
                expect=ACTIVE,
                ended_at=self.clock.now(),
                reason=f"replaced by fire {f.id} (concurrency: replace)",
            )
            self.log(
                f"[scheduler] {s.id}: stopped {o.sweep_id} for the new fire (concurrency: replace)"
            )
        return True

    def _start(self, f: Fire, resume: bool) -> Fire:
        self.log(
            f"[scheduler] {f.schedule_id}: starting {f.sweep_id} ({f.reason}"
            f"{', resume' if resume else ''})"
        )
        pid = self.runner.start(f, resume)
        self.store.launched(f.id, pid, self.clock.now())
        return self.store.fire(f.id)

    def run_forever(self, interval_s: float = 30.0, max_ticks: int | None = None) -> None:
        n = 0
        while max_ticks is None or n < max_ticks:
            self.tick()
            n += 1
            wake = min(
                [s.next_fire for s in self.store.schedules()] or [self.clock.now() + interval_s]
            )
            self.clock.sleep(max(0.5, min(interval_s, wake - self.clock.now())))


# ---------------------------------------------------------------------------------------------
# One fire: warm start, sweep, champion


def previous_sweeps(storage: str, schedule_id: str) -> list[dict[str, Any]]:
    """Final ledger rows of this schedule's successful sweeps, oldest first."""
    from orchestrator import ledger

    out = []
    for r in ledger.latest_by_run(storage):
        extra = json.loads(r["extra"] or "{}")
        if (
            r["kind"] == "sweep"
            and r["status"] == "SUCCEEDED"
            and extra.get("schedule_id") == schedule_id
            and extra.get("best_config")
        ):
            out.append({**r, "extra": extra, "metrics": json.loads(r["metrics"] or "{}")})
    return out


def warm_start_points(
    storage: str, schedule_id: str, keys: list[str], k: int
) -> list[dict[str, Any]]:
    """The best configs of up to `k` previous sweeps of the schedule, best first, restricted
    to sweeps whose best config sets every key of the current search space."""
    if k <= 0:
        return []
    scored = []
    for r in previous_sweeps(storage, schedule_id):
        metric, mode = r["extra"].get("metric"), r["extra"].get("mode", "max")
        v = r["metrics"].get(metric)
        cfg = r["extra"]["best_config"]
        if v is None or any(key not in cfg for key in keys):
            continue
        scored.append((v if mode == "min" else -v, {key: cfg[key] for key in keys}))
    points: list[dict[str, Any]] = []
    for _, cfg in sorted(scored, key=lambda x: x[0]):
        if cfg not in points:
            points.append(cfg)
    return points[:k]


def fire_seed(seed: int, sweep_id: str) -> int:
    """The searcher seed of one fire: reproducible per fire (a resumed fire reuses its sweep.json),
    different between fires, so each explores configs the previous fires did not."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}/{sweep_id}".encode()).digest()[:4], "big")


def current_champion(storage: str, name: str) -> dict[str, Any] | None:
    from orchestrator import ledger

    rows = [
        r
        for r in ledger.read_events(storage).to_pylist()
        if r["kind"] == "champion" and r["run_name"] == name
    ]
    if not rows:
        return None
    r = rows[-1]
    return {
        **r,
        "metrics": json.loads(r["metrics"] or "{}"),
        "extra": json.loads(r["extra"] or "{}"),
    }


def maybe_promote(storage: str, name: str, summary: dict[str, Any], workload: str = "") -> bool:
    """Record the sweep's best as champion of `name` only if it beats the current champion on
    the sweep's metric (ties keep the champion). Returns True when promoted."""
    from orchestrator import ledger

    metric, mode, value = summary.get("metric"), summary.get("mode"), summary.get("best_metric")
    if summary.get("status") != "SUCCEEDED" or value is None:
        return False
    champ = current_champion(storage, name)
    old = None if champ is None else champ["metrics"].get(metric)
    if old is not None and not (value > old if mode == "max" else value < old):
        return False
    now = time.time()
    ledger.record(
        storage,
        run_id=f"champion/{name}/{summary.get('sweep_id')}",
        run_name=name,
        workload=workload,
        status="SUCCEEDED",
        kind="champion",
        start_time=now,
        end_time=now,
        metrics={metric: value},
        sweep_id=summary.get("sweep_id", ""),
        latest_checkpoint=summary.get("best_checkpoint") or "",
        extra={
            "config": summary.get("best_config"),
            "trial": summary.get("best_trial"),
            "trial_id": summary.get("best_trial_id", ""),
            "previous": old,
            "previous_sweep": champ["sweep_id"] if champ else "",
            "mode": mode,
            "metric": metric,
        },
    )
    return True


SweepFn = Callable[..., dict[str, Any]]


def run_fire(
    store: Store,
    fire_id: int,
    *,
    sweep_fn: SweepFn | None = None,
    clock: Clock | None = None,
    pid: int | None = None,
    log=print,
) -> dict[str, Any] | None:
    """Run (or continue) one fire's sweep in this process and record how it ended."""
    from orchestrator.spec import load_spec

    clock = clock or SystemClock()
    f = store.start_attempt(fire_id, pid or os.getpid(), clock.now())
    if f is None:
        log(f"fire {fire_id} has ended already; nothing to do")
        return None
    s = store.get(f.schedule_id)
    try:
        summary = fire_sweep(
            load_spec(s.spec_path, s.overrides),
            s.id,
            f.sweep_id,
            warm_start=s.warm_start,
            promote=s.promote,
            address=s.address,
            sweep_fn=sweep_fn,
            log=log,
        )
        status = "succeeded" if summary.get("status") == "SUCCEEDED" else "failed"
        store.mark(
            f.id,
            status,
            expect=("running",),
            ended_at=clock.now(),
            reason=fire_reason(summary),
        )
        return summary
    except Exception as exc:  # noqa: BLE001 - the fire row records the cause
        store.mark(
            f.id,
            "failed",
            expect=("running",),
            ended_at=clock.now(),
            reason=f"{type(exc).__name__}: {exc}"[:2000],
        )
        raise


def fire_reason(summary: dict[str, Any]) -> str:
    return f"best {summary.get('metric')}={summary.get('best_metric')}" + (
        "; promoted to champion" if summary.get("promoted") else ""
    )


def fire_sweep(
    spec,
    schedule_id: str,
    sweep_id: str,
    *,
    warm_start: int,
    promote: bool,
    address: str | None = None,
    sweep_fn: SweepFn | None = None,
    console=None,
    log=print,
) -> dict[str, Any]:
    """One fire's sweep, wherever it runs (`orch schedule fire` beside the scheduler, or `orch
    sweep --schedule-id` as a queued job on the cluster): a new fire gets its own searcher seed
    and the best configs of earlier fires; a fire started before continues (its sweep.json has
    it all). The best trial becomes champion when it beats the current one (`promoted`)."""
    from orchestrator.rundir import resolve_storage
    from orchestrator.spec import validate_spec
    from orchestrator.sweep.spec import validate_sweep
    from orchestrator.sweep.tune import seed_points

    sw = validate_sweep(spec)
    storage = resolve_storage(spec.storage_path)
    if sweep_fn is None:
        from orchestrator.sweep.driver import run_sweep as sweep_fn
    resume = _sweep_started(storage, sweep_id)  # resumed: its sweep.json has it all
    points: list[dict[str, Any]] = []
    if not resume:
        if sw.seed is not None:
            seed = fire_seed(sw.seed, sweep_id)
            spec = validate_spec({**spec.to_dict(), "sweep": {**spec.sweep, "seed": seed}})
            log(f"searcher seed of {sweep_id}: {seed} (from sweep.seed {sw.seed})")
        found = warm_start_points(storage, schedule_id, list(sw.search_space), warm_start)
        points = seed_points(sw, found)
        if points:
            log(
                f"warm start of {sweep_id}: {len(points)} previous best config(s), each "
                f"run once, and {sw.num_samples - len(points)} sample(s) of the "
                f"{sw.algorithm} search: {points}"
            )
        if len(points) < len(found):
            why = (
                "a grid sweep runs every config of its grid anyway"
                if sw.algorithm == "grid"
                else f"at most num_samples - 1 = {sw.num_samples - 1} are seeded, and only "
                "configs inside the current search space"
            )
            left = len(found) - len(points)
            log(f"warm start: {left} previous best config(s) left out: {why}")
    extra = {"console": console} if console is not None else {}
    summary = sweep_fn(
        spec,
        resume=resume,
        sweep_id=sweep_id,
        address=address,
        points_to_evaluate=points,
        schedule_id=schedule_id,
        **extra,
    )
    promoted = promote and maybe_promote(storage, schedule_id, summary, spec.workload)
    summary["promoted"] = bool(promoted)
    return summary


def _sweep_started(storage: str, sweep_id: str) -> bool:
    from orchestrator import rundir
    from orchestrator.sweep.spec import SWEEP_FILE

    return rundir.exists(rundir.join(storage, sweep_id, SWEEP_FILE))


def add_schedule(
    db: str,
    spec_path: str,
    overrides: list[str],
    *,
    cron: str | None = None,
    name: str | None = None,
    missed: str | None = None,
    concurrency: str | None = None,
    warm_start: int | None = None,
    address: str | None = None,
    now: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    working_dir: str | None = None,
) -> Schedule:
    """Validate SPEC (and its sweep), merge the schedule section with the flags, store it.

    queue / priority (or the spec's queue: section): each fire goes through the cluster's
    queue as a queued sweep, uploading working_dir (default: the current folder), and each of
    its trials waits there for its workers. Checked here as `orch submit --queue` checks."""
    from pydantic import ValidationError

    from orchestrator.errors import FieldError, SpecError
    from orchestrator.spec import load_spec, pydantic_errors
    from orchestrator.sweep.spec import validate_sweep

    spec = load_spec(spec_path, overrides)
    validate_sweep(spec)
    section = dict(spec.schedule or {})
    for key, val in (
        ("cron", cron),
        ("missed", missed),
        ("concurrency", concurrency),
        ("warm_start", warm_start),
    ):
        if val is not None:
            section[key] = val
    try:
        ss = ScheduleSpec.model_validate(section)
    except ValidationError as exc:
        raise SpecError(pydantic_errors(exc, ScheduleSpec, prefix="schedule"), spec_path) from None
    if not ss.cron:
        raise SpecError(
            [
                FieldError(
                    "schedule.cron",
                    "no cron expression: pass --cron '0 3 * * *' or set schedule.cron in the spec",
                )
            ],
            spec_path,
        )
    queued = queue is not None or priority is not None or "queue" in spec.model_fields_set
    wd = None
    if queued:
        queue = queue or spec.queue.name
        wd = str(Path(working_dir or ".").resolve())
    elif working_dir is not None:
        raise SpecError(
            [FieldError("--working-dir", "only with a queue (--queue or a queue: section)")],
            spec_path,
        )
    now = time.time() if now is None else now
    s = Schedule(
        id=name or spec.name,
        spec_path=str(Path(spec_path).resolve()),
        overrides=overrides,
        cron=ss.cron,
        missed=ss.missed,
        concurrency=ss.concurrency,
        warm_start=ss.warm_start,
        promote=ss.promote,
        misfire_grace_s=ss.misfire_grace_s,
        address=address,
        created=now,
        next_fire=next_fire(ss.cron, now),
        queue=queue,
        priority=priority,
        working_dir=wd,
    )
    if queued:  # what each fire will submit, checked now (spec inside working_dir, sizes)
        QueueRunner(Store(db)).job(s, sweep_id_for(s.id, now), uploaded=False)
    Store(db).add(s)
    return s
