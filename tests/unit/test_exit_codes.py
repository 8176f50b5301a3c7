"""One exit code per meaning (orchestrator/errors.py), each reached through the command line as a
user would reach it; the table is the same in `orch --help`, the README and the code."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import EXIT_CODES, ExitCode, OrchestratorError, exit_code_table

ROOT = Path(__file__).resolve().parents[2]

# Every module that defines an OrchestratorError subclass.
MODULES = [
    "orchestrator.errors",
    "orchestrator.report",
    "orchestrator.runtime",
    "orchestrator.rundir",
    "orchestrator.ledger",
    "orchestrator.translate",
    "orchestrator.scaffold",
    "orchestrator.data.images",
    "orchestrator.compress.spec",
    "orchestrator.sweep.spec",
    "orchestrator.sweep.schedule",
    "orchestrator.queue.client",
    "orchestrator.cluster.jobs",
]


def _run(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_codes_are_distinct_and_every_error_maps_to_one():
    assert len({int(c) for c in ExitCode}) == len(ExitCode) == len(EXIT_CODES)
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    for m in MODULES:
        importlib.import_module(m)
    errors = list(_subclasses(OrchestratorError))
    assert len(errors) >= 25
    for cls in [OrchestratorError, *errors]:
        assert cls.exit_code in set(ExitCode) and cls.exit_code != ExitCode.OK, cls


def test_split_classes_say_different_things():
    from orchestrator.cluster import jobs
    from orchestrator.compress.spec import CompressError, CompressInputError
    from orchestrator.queue.client import QueueInputError, QueueNotFoundError
    from orchestrator.sweep.schedule import ScheduleExistsError, ScheduleNotFoundError
    from orchestrator.sweep.spec import SweepExistsError, SweepNotFoundError

    assert (ScheduleNotFoundError.exit_code, ScheduleExistsError.exit_code) == (6, 7)
    assert (SweepNotFoundError.exit_code, SweepExistsError.exit_code) == (6, 7)
    assert (CompressError.exit_code, CompressInputError.exit_code) == (1, 2)
    assert (QueueInputError.exit_code, QueueNotFoundError.exit_code) == (2, 6)
    codes = [
        jobs.JobsInputError,
        jobs.JobNotFoundError,
        jobs.SubmissionConflictError,
        jobs.ClusterAuthError,
        jobs.ClusterUnreachableError,
    ]
    assert [c.exit_code for c in codes] == [2, 6, 7, 8, 9]


def test_help_and_readme_print_the_table():
    res = _run(["--help"])
    assert res.exit_code == 0
    for code, text in EXIT_CODES.items():
        assert f"{int(code):>3}  {text}" in res.output
    assert exit_code_table() in (ROOT / "README.md").read_text()


# --- one test per meaning -----------------------------------------------------------------------


def test_0_ok():
    res = _run(["cluster", "validate", str(ROOT / "cluster" / "gpu.yaml")])
    assert res.exit_code == ExitCode.OK == 0, res.output


def _fake_follow(monkeypatch, final: str):
    import orchestrator.cli.jobs as cli_jobs

    monkeypatch.setattr(cli_jobs, "make_client", lambda addr: SimpleNamespace(_headers={}))
    monkeypatch.setattr(cli_jobs, "follow_logs", lambda client, addr, job, write: final)


def test_1_the_job_failed(monkeypatch):
    _fake_follow(monkeypatch, "FAILED")
    res = _run(["logs", "job-1", "--follow"])
    assert res.exit_code == ExitCode.FAILED == 1 and "FAILED" in res.output


def test_2_bad_input(tmp_path):
    res = _run(["validate", str(tmp_path / "missing.yaml")])
    assert res.exit_code == ExitCode.BAD_INPUT == 2 and "not found" in res.output
    spec = str(ROOT / "jobs" / "mnist_mlp.yaml")
    for option, value in (
        ("--runtime-env-json", "{not json"),
        ("--runtime-env-json", "[1, 2]"),
        ("--entrypoint-resources", '{"head": "lots"}'),
    ):
        res = _run(["submit", spec, option, value, "--address", "http://127.0.0.1:1"])
        assert res.exit_code == 2 and option in res.output, (option, res.output)


def test_3_checkpoint(tmp_path):
    res = _run(["rollout", str(tmp_path / "no-such-run")])
    assert res.exit_code == ExitCode.CHECKPOINT == 3 and "no such checkpoint" in res.output


def test_4_resources_never_satisfiable(tmp_path):
    res = _run(
        [
            "run",
            str(ROOT / "jobs" / "mnist_mlp.yaml"),
            "resources.gpus_per_worker=64",
            f"storage_path={tmp_path}",
            "--cluster-config",
            str(ROOT / "cluster" / "gpu.yaml"),
        ]
    )
    assert res.exit_code == ExitCode.RESOURCES == 4, res.output
    assert "can never be scheduled" in res.output


def test_5_data(tmp_path):
    res = _run(["data", "inspect", str(tmp_path / "nowhere")])
    assert res.exit_code == ExitCode.DATA == 5 and "nowhere" in res.output


def test_6_not_found(tmp_path):
    res = _run(["schedule", "remove", "nope", "--db", str(tmp_path / "s.db")])
    assert res.exit_code == ExitCode.NOT_FOUND == 6 and "no schedule 'nope'" in res.output
    res = _run(["report", "nope", "--storage-path", str(tmp_path)])
    assert res.exit_code == 6, res.output


def test_7_conflict(tmp_path):
    from tests.unit.test_sweep_schedule import SPEC

    spec = tmp_path / "mem.yaml"
    spec.write_text(SPEC.format(storage=tmp_path / "runs"))
    add = ["schedule", "add", str(spec), "--db", str(tmp_path / "s.db")]
    assert _run(add).exit_code == 0
    res = _run(add)
    assert res.exit_code == ExitCode.CONFLICT == 7 and "exists already" in res.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_8_auth(tmp_path, monkeypatch):
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    res = _run(["list", "--address", f"http://127.0.0.1:{_free_port()}"])
    assert res.exit_code == ExitCode.AUTH == 8 and "no token found" in res.output


def test_9_unreachable(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    res = _run(["list", "--address", f"http://127.0.0.1:{_free_port()}"])
    assert res.exit_code == ExitCode.UNREACHABLE == 9 and "cannot reach" in res.output


def test_130_a_followed_job_that_was_stopped(monkeypatch):
    _fake_follow(monkeypatch, "STOPPED")
    res = _run(["logs", "job-1", "--follow"])
    assert res.exit_code == ExitCode.STOPPED == 130 and "STOPPED" in res.output


def _fake_run(monkeypatch, launch):
    import orchestrator.launch
    import orchestrator.plan
    import orchestrator.runtime
    import orchestrator.spec

    monkeypatch.setattr(orchestrator.spec, "load_spec", lambda spec, overrides: None)
    monkeypatch.setattr(orchestrator.plan, "plan", lambda spec, **kw: None)
    monkeypatch.setattr(orchestrator.runtime, "stop_on_sigterm", lambda: None)
    monkeypatch.setattr(orchestrator.launch, "launch", launch)


def test_130_orch_run_stopped_by_the_user(monkeypatch):
    summary = {"run_name": "r", "status": "STOPPED", "metrics": {}, "run_dir": "runs/r"}
    _fake_run(monkeypatch, lambda p, console, address: summary)
    res = _run(["run", "spec.yaml"])
    assert res.exit_code == 130, res.output
    _fake_run(monkeypatch, lambda p, console, address: {**summary, "status": "FAILED"})
    assert _run(["run", "spec.yaml"]).exit_code == 1


@pytest.mark.parametrize("args", [["run", "spec.yaml"], ["list"]])
def test_130_ctrl_c_anywhere(monkeypatch, args):
    """A KeyboardInterrupt that reaches the command line (Ctrl-C before the run's own handler
    is up, or in any other command) exits 130, not click's 'Aborted!' and 1."""

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    import orchestrator.cli.jobs as cli_jobs

    _fake_run(monkeypatch, interrupted)
    monkeypatch.setattr(cli_jobs, "make_client", interrupted)
    res = _run(args)
    assert res.exit_code == 130 and "Aborted" not in res.output, res.output
