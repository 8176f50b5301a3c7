"""The run ledger: one small Parquet file per run event, readable by pyarrow, pandas and duckdb.

    orch runs                       # latest state of every run, as a table
    python -c "import pyarrow.dataset as ds; print(ds.dataset('runs/_ledger').to_table())"

Each event is written to a temporary file and renamed into place, so a reader never sees a
half-written row and concurrent writers never clobber each other (names are unique).
The ledger lives at `<storage_path>/_ledger/` beside the run directories.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator import rundir
from orchestrator.errors import ExitCode, OrchestratorError

LEDGER_DIR = "_ledger"


class JobStatus(str, enum.Enum):
    """One status per run. Terminal states are final: a transition out of one is refused."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)


class StatusTransitionError(RuntimeError):
    pass


@dataclass
class RunState:
    """Holds a run's status and refuses to overwrite a terminal one."""

    status: JobStatus = JobStatus.PENDING
    history: list[JobStatus] = field(default_factory=list)

    def to(self, new: JobStatus) -> JobStatus:
        if self.status.terminal:
            raise StatusTransitionError(
                f"run already {self.status.value}; refusing transition to {new.value}"
            )
        self.history.append(self.status)
        self.status = new
        return new


SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("run_id", pa.string()),
        ("run_name", pa.string()),
        ("workload", pa.string()),
        ("spec_hash", pa.string()),
        ("status", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("end_time", pa.timestamp("us", tz="UTC")),
        ("metrics", pa.string()),  # JSON of the final (or latest) metrics
        ("run_dir", pa.string()),
        ("latest_checkpoint", pa.string()),
        ("error", pa.string()),
        ("sweep_id", pa.string()),
        ("parent_run", pa.string()),
        ("kind", pa.string()),  # run | trial | sweep | compress | export | champion
        ("host", pa.string()),
        ("extra", pa.string()),  # JSON, for stage-specific fields
    ]
)


def _ts(value: float | None):
    if value is None:
        return None
    return int(value * 1_000_000)


def ledger_dir(storage_path: str | Path) -> str:
    """<storage_path>/_ledger: a local path or a URI (orchestrator/rundir.py reads both)."""
    return rundir.join(storage_path, LEDGER_DIR)


def record(
    storage_path: str | Path,
    *,
    run_id: str,
    run_name: str,
    workload: str,
    status: JobStatus | str,
    spec_hash: str = "",
    start_time: float | None = None,
    end_time: float | None = None,
    metrics: dict[str, Any] | None = None,
    run_dir: str = "",
    latest_checkpoint: str = "",
    error: str = "",
    sweep_id: str = "",
    parent_run: str = "",
    kind: str = "run",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Append one event row, atomically. Returns the Parquet file written."""
    status = JobStatus(status).value if not isinstance(status, JobStatus) else status.value
    now = time.time()
    event_id = f"{int(now * 1e6):016d}-{uuid.uuid4().hex[:12]}"
    row = {
        "event_id": event_id,
        "run_id": run_id,
        "run_name": run_name,
        "workload": workload,
        "spec_hash": spec_hash,
        "status": status,
        "event_time": _ts(now),
        "start_time": _ts(start_time),
        "end_time": _ts(end_time),
        "metrics": json.dumps(metrics or {}, default=float, sort_keys=True),
        "run_dir": str(run_dir),
        "latest_checkpoint": str(latest_checkpoint or ""),
        "error": error or "",
        "sweep_id": sweep_id,
        "parent_run": parent_run,
        "kind": kind,
        "host": socket.gethostname(),
        "extra": json.dumps(extra or {}, default=str, sort_keys=True),
    }
    table = pa.Table.from_pylist([row], schema=SCHEMA)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    # One whole file (temp + rename) or one object (one PUT): a reader never sees half a row.
    return rundir.write_bytes(
        rundir.join(ledger_dir(storage_path), f"{event_id}.parquet"), buf.getvalue().to_pybytes()
    )


def read_events(storage_path: str | Path) -> pa.Table:
    """Every event, oldest first. Temporary files (a writer mid-write) are ignored."""
    d = ledger_dir(storage_path)
    names = [
        n
        for n, is_dir in rundir.list_dir(d)
        if not is_dir and n.endswith(".parquet") and not n.startswith(".")
    ]
    if not names:
        return SCHEMA.empty_table()
    tables = []
    for n in sorted(names):
        try:
            data = rundir.read_bytes(rundir.join(d, n))
        except FileNotFoundError:
            continue
        tables.append(pq.read_table(pa.BufferReader(data), schema=SCHEMA))
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by("event_id")


def latest_by_run(storage_path: str | Path) -> list[dict[str, Any]]:
    """The newest event of each run id, oldest run first."""
    rows = read_events(storage_path).to_pylist()
    latest: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, str] = {}
    for r in rows:
        first_seen.setdefault(r["run_id"], r["event_id"])
        # A terminal event is final: a later non-terminal event (which should not happen)
        # never hides it.
        prev = latest.get(r["run_id"])
        if prev is not None and JobStatus(prev["status"]).terminal:
            continue
        latest[r["run_id"]] = r
    return sorted(latest.values(), key=lambda r: first_seen[r["run_id"]])


def runs_for_name(storage_path: str | Path, run_name: str) -> list[dict[str, Any]]:
    return [r for r in latest_by_run(storage_path) if r["run_name"] == run_name]


def pid_alive(pid: int | None) -> bool:
    """Whether a process of this host lives (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def driver_of(row: dict[str, Any]) -> tuple[str, int] | None:
    """(host, pid) of the process that wrote a run's rows, if recorded."""
    try:
        extra = json.loads(row.get("extra") or "{}")
    except json.JSONDecodeError:
        return None
    pid = extra.get("driver_pid")
    return (row.get("host") or "", int(pid)) if pid else None


def unfinished(storage_path: str | Path, run_name: str) -> list[dict[str, Any]]:
    """Runs of this name whose latest row is not terminal."""
    return [r for r in runs_for_name(storage_path, run_name) if not JobStatus(r["status"]).terminal]


def reconcile_orphans(storage_path: str | Path, run_name: str) -> tuple[list[str], list[dict]]:
    """Close the rows of runs whose driver died without writing a terminal row.

    Returns (closed run ids, still-live rows). A run is an orphan when its driver ran on this
    host and that process is gone (killed, crashed, machine rebooted). Rows written from
    another host are left alone: we cannot tell whether their driver lives.
    """
    closed, live = [], []
    here = socket.gethostname()
    for row in unfinished(storage_path, run_name):
        drv = driver_of(row)
        if drv and drv[0] == here and not pid_alive(drv[1]):
            record(
                storage_path,
                run_id=row["run_id"],
                run_name=row["run_name"],
                workload=row["workload"],
                status=JobStatus.STOPPED,
                spec_hash=row["spec_hash"],
                start_time=row["start_time"].timestamp() if row["start_time"] else None,
                end_time=time.time(),
                metrics=json.loads(row["metrics"] or "{}"),
                run_dir=row["run_dir"],
                latest_checkpoint=row["latest_checkpoint"],
                error=f"driver lost: process {drv[1]} on {drv[0]} ended without a final row",
                sweep_id=row["sweep_id"],
                parent_run=row["parent_run"],
                kind=row["kind"],
            )
            closed.append(row["run_id"])
        elif drv and drv[0] == here:
            live.append(row)
    return closed, live


class RunInProgressError(OrchestratorError):
    """Another live driver on this host is running the same run name."""

    exit_code = ExitCode.CONFLICT


def claim_run_name(storage_path: str | Path, run_name: str) -> list[str]:
    """Before a run starts: close orphaned rows of this name (returns their ids), and refuse
    while a live driver on this host still runs it."""
    closed, live = reconcile_orphans(storage_path, run_name)
    if live:
        drv = driver_of(live[0])
        raise RunInProgressError(
            f"run '{run_name}' is already running (driver pid {drv[1] if drv else '?'} on "
            f"{drv[0] if drv else '?'}); stop it first, or use --fresh / --name for a separate run"
        )
    return closed
