"""The Parquet run ledger and the status state machine. No Ray."""

from __future__ import annotations

import json
import threading

import pyarrow.dataset as ds
import pytest

from orchestrator import ledger
from orchestrator.ledger import JobStatus, RunState, StatusTransitionError


def _rec(path, run_id, status, **kw):
    return ledger.record(
        path,
        run_id=run_id,
        run_name=run_id.split("-")[0],
        workload="mnist_mlp",
        status=status,
        **kw,
    )


def test_one_file_per_event_readable_by_pyarrow(tmp_path):
    _rec(tmp_path, "a-1", JobStatus.PENDING)
    _rec(tmp_path, "a-1", JobStatus.RUNNING)
    _rec(tmp_path, "a-1", JobStatus.SUCCEEDED, metrics={"accuracy": 0.95})
    files = list((tmp_path / "_ledger").glob("*.parquet"))
    assert len(files) == 3
    table = ds.dataset(str(tmp_path / "_ledger")).to_table()
    assert table.num_rows == 3
    latest = ledger.latest_by_run(tmp_path)
    assert len(latest) == 1 and latest[0]["status"] == "SUCCEEDED"
    assert json.loads(latest[0]["metrics"])["accuracy"] == 0.95


def test_no_temp_files_left_and_readers_ignore_them(tmp_path):
    _rec(tmp_path, "b-1", JobStatus.RUNNING)
    (tmp_path / "_ledger" / ".half.parquet.tmp").write_bytes(b"garbage")
    assert ledger.read_events(tmp_path).num_rows == 1


def test_terminal_row_is_never_hidden(tmp_path):
    _rec(tmp_path, "c-1", JobStatus.FAILED, error="boom")
    _rec(tmp_path, "c-1", JobStatus.RUNNING)  # a late, out-of-order event
    assert ledger.latest_by_run(tmp_path)[0]["status"] == "FAILED"


def test_concurrent_writers_lose_nothing(tmp_path):
    def write(i):
        for s in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED):
            _rec(tmp_path, f"r{i}-x", s)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.read_events(tmp_path).num_rows == 24
    assert {r["status"] for r in ledger.latest_by_run(tmp_path)} == {"SUCCEEDED"}


def test_run_state_refuses_leaving_terminal():
    st = RunState()
    st.to(JobStatus.RUNNING)
    st.to(JobStatus.SUCCEEDED)
    with pytest.raises(StatusTransitionError):
        st.to(JobStatus.FAILED)
    assert st.status is JobStatus.SUCCEEDED


def test_empty_ledger(tmp_path):
    assert ledger.read_events(tmp_path).num_rows == 0
    assert ledger.latest_by_run(tmp_path) == []
