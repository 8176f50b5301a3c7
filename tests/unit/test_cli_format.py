"""`--format table|json|csv` on the listings (orchestrator/cli/output.py): json and csv parse
back with stable keys, and a table printed to a pipe keeps one line per row, uncut."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from orchestrator import ledger
from orchestrator.cli import app
from orchestrator.cli.output import to_csv

ROOT = Path(__file__).resolve().parents[2]
# Longer than any 80-column table could show whole.
LONG = "mnist-mlp-sweep-20250101-030000_trial_00007_with_a_name_long_enough_to_be_cut"


def _ledger(tmp_path: Path) -> str:
    storage = str(tmp_path / "runs")
    ledger.record(
        storage,
        run_id="r1",
        run_name=LONG,
        workload="mnist_mlp",
        status="SUCCEEDED",
        start_time=1_735_700_000.0,
        end_time=1_735_700_060.0,
        metrics={"accuracy": 0.9812, "loss": 0.0512, "step": 1200},
        latest_checkpoint=f"{storage}/{LONG}/checkpoint_000012",
        kind="trial",
        sweep_id="mnist-mlp-sweep-20250101-030000",
    )
    ledger.record(
        storage,
        run_id="r2",
        run_name="cartpole-dqn",
        workload="cartpole_dqn",
        status="FAILED",
        start_time=1_735_700_100.0,
        error="boom, with a comma",
        metrics={},
    )
    return storage


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_runs_json_parses_back_with_every_ledger_column(tmp_path):
    storage = _ledger(tmp_path)
    out = json.loads(_invoke(["runs", "--storage-path", storage, "--format", "json"]).stdout)
    assert isinstance(out, list) and len(out) == 2
    assert all(list(r) == ledger.SCHEMA.names for r in out)  # the same keys, in order
    by = {r["run_id"]: r for r in out}
    assert by["r1"]["run_name"] == LONG and by["r1"]["status"] == "SUCCEEDED"
    assert by["r1"]["metrics"] == {"accuracy": 0.9812, "loss": 0.0512, "step": 1200}
    assert by["r1"]["kind"] == "trial" and by["r1"]["latest_checkpoint"].endswith("_000012")
    start = datetime.fromisoformat(by["r1"]["start_time"])
    assert start.timestamp() == 1_735_700_000.0 and start.utcoffset().total_seconds() == 0
    assert by["r2"]["end_time"] is None and by["r2"]["error"] == "boom, with a comma"
    # Filters apply as for the table.
    out = json.loads(
        _invoke(
            ["runs", "--storage-path", storage, "--status", "failed", "--format", "json"]
        ).stdout
    )
    assert [r["run_id"] for r in out] == ["r2"]


def test_runs_csv_has_a_header_and_a_line_per_run(tmp_path):
    storage = _ledger(tmp_path)
    text = _invoke(["runs", "--storage-path", storage, "--format", "CSV"]).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == ledger.SCHEMA.names
    assert [r["run_name"] for r in rows] == [LONG, "cartpole-dqn"]
    assert json.loads(rows[0]["metrics"])["accuracy"] == 0.9812
    assert rows[1]["error"] == "boom, with a comma" and rows[1]["end_time"] == ""


def test_runs_with_no_ledger_gives_empty_json_and_a_bare_header(tmp_path):
    storage = str(tmp_path / "none")
    assert json.loads(_invoke(["runs", "--storage-path", storage, "--format", "json"]).stdout) == []
    text = _invoke(["runs", "--storage-path", storage, "--format", "csv"]).stdout
    assert text.splitlines() == [",".join(ledger.SCHEMA.names)]


def test_runs_table_in_a_pipe_is_one_uncut_line_per_run(tmp_path):
    storage = _ledger(tmp_path)
    lines = _invoke(["runs", "--storage-path", storage]).stdout.splitlines()
    mine = [ln for ln in lines if "mnist_mlp" in ln]
    assert len(mine) == 1, lines  # the row did not wrap onto a second line
    row = mine[0]
    assert LONG in row and "…" not in row
    assert "SUCCEEDED" in row and "accuracy=0.9812" in row and "checkpoint_000012" in row
    assert len([ln for ln in lines if "cartpole_dqn" in ln]) == 1


def test_an_unknown_format_is_bad_input(tmp_path):
    res = CliRunner().invoke(app, ["runs", "--storage-path", str(tmp_path), "--format", "xml"])
    assert res.exit_code == 2 and "xml" in res.output


def _schedule_db(tmp_path: Path) -> str:
    from tests.unit.test_sweep_schedule import SPEC

    spec_path = tmp_path / "mem.yaml"
    spec_path.write_text(SPEC.format(storage=tmp_path / "runs"))
    db = str(tmp_path / "s.db")
    name = "nightly-" + "x" * 60
    _invoke(["schedule", "add", str(spec_path), "--name", name, "--db", db, "train.lr=0.01"])
    return db


def test_schedule_list_json_csv_and_table(tmp_path):
    db = _schedule_db(tmp_path)
    out = json.loads(_invoke(["schedule", "list", "--db", db, "--format", "json"]).stdout)
    assert len(out) == 1
    s = out[0]
    assert list(s) == [
        "id",
        "spec",
        "overrides",
        "cron",
        "next_fire",
        "missed",
        "concurrency",
        "warm_start",
        "promote",
        "address",
        "queue",
        "priority",
        "created",
        "last_fires",
    ]
    assert s["id"].startswith("nightly-") and s["cron"] == "0 3 * * *"
    assert s["overrides"] == ["train.lr=0.01"] and s["last_fires"] == []
    assert datetime.fromisoformat(s["next_fire"]).hour == 3
    rows = list(
        csv.DictReader(
            io.StringIO(_invoke(["schedule", "list", "--db", db, "--format", "csv"]).stdout)
        )
    )
    assert rows[0]["id"] == s["id"] and json.loads(rows[0]["overrides"]) == ["train.lr=0.01"]
    lines = _invoke(["schedule", "list", "--db", db]).stdout.splitlines()
    mine = [ln for ln in lines if "nightly-" in ln]
    assert len(mine) == 1 and s["id"] in mine[0] and "train.lr=0.01" in mine[0]


def _info(sid: str, status: str, entrypoint: str, start_ms: int):
    return SimpleNamespace(
        submission_id=sid,
        status=SimpleNamespace(value=status),
        entrypoint=entrypoint,
        message="",
        start_time=start_ms,
        end_time=None,
        driver_exit_code=None,
        metadata={"orch_spec": "jobs/mnist_mlp.yaml", "orch_spec_hash": "abc"},
    )


def test_list_jobs_json_csv_and_the_json_alias(monkeypatch):
    import orchestrator.cli.jobs as cli_jobs

    long_ep = "orch run jobs/mnist_mlp.yaml " + " ".join(f"train.k{i}={i}" for i in range(20))
    infos = [
        _info("b-job", "RUNNING", long_ep, 2_000_000),
        _info("a-job", "SUCCEEDED", "orch run jobs/mnist_mlp.yaml", 1_000_000),
    ]
    client = SimpleNamespace(_headers={}, list_jobs=lambda: infos)
    monkeypatch.setattr(cli_jobs, "make_client", lambda addr: client)
    out = json.loads(_invoke(["list", "--format", "json"]).stdout)
    assert [j["submission_id"] for j in out] == ["a-job", "b-job"]  # oldest first
    assert list(out[0]) == cli_jobs.JOB_KEYS and out[0]["spec"] == "jobs/mnist_mlp.yaml"
    assert json.loads(_invoke(["list", "--json"]).stdout) == out
    rows = list(csv.DictReader(io.StringIO(_invoke(["list", "--format", "csv"]).stdout)))
    assert [r["status"] for r in rows] == ["SUCCEEDED", "RUNNING"]
    assert json.loads(rows[0]["metadata"])["orch_spec_hash"] == "abc"
    # Not on a terminal: every column, the long entrypoint whole, one line per job.
    lines = _invoke(["list"]).stdout.splitlines()
    assert len([ln for ln in lines if "b-job" in ln]) == 1
    assert any(long_ep in ln for ln in lines)


def test_queue_json_csv_and_the_json_alias(monkeypatch):
    import orchestrator.cli.queue as cli_queue

    base = dict(
        queue="default",
        priority=1,
        workers=1,
        per_worker={"CPU": 1.0},
        why="",
        message="",
        preemptions=0,
        failures=0,
        retries=0,
        submitted_at=0.0,
        started_at=0.0,
    )
    rows = [
        {**base, "id": "run-1", "state": "RUNNING", "position": None, "seq": 1},
        {**base, "id": "wait-2", "state": "QUEUED", "position": 1, "seq": 2, "why": "no room"},
    ]
    monkeypatch.setattr(cli_queue, "_call", lambda address, method, *a, **k: rows)
    out = json.loads(_invoke(["queue", "--format", "json"]).stdout)
    assert [j["id"] for j in out] == ["wait-2", "run-1"]  # waiting first, in order
    assert json.loads(_invoke(["queue", "--json"]).stdout) == out
    got = list(csv.DictReader(io.StringIO(_invoke(["queue", "--format", "csv"]).stdout)))
    assert [r["id"] for r in got] == ["wait-2", "run-1"]
    assert json.loads(got[0]["per_worker"]) == {"CPU": 1.0}


def test_to_csv_quotes_and_flattens():
    text = to_csv([{"a": 'x, "y"', "b": {"k": [1, 2]}, "c": None}])
    assert list(csv.reader(io.StringIO(text))) == [["a", "b", "c"], ['x, "y"', '{"k": [1, 2]}', ""]]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_cluster_pools_formats(fmt):
    out = _invoke(["cluster", "pools", str(ROOT / "cluster" / "gpu.yaml"), "--format", fmt]).stdout
    rows = json.loads(out) if fmt == "json" else list(csv.DictReader(io.StringIO(out)))
    assert {r["role"] for r in rows} >= {"head", "GPU pool"}
    assert all(
        list(r) == ["node_type", "role", "resources", "min_workers", "max_workers"] for r in rows
    )
