"""`orch submit / logs / status / stop / list` against a real `ray start --head` on 127.0.0.1
with token authentication on, started and stopped by this module (tests/integration/local_head.py).

One head for the module: a small MNIST job submitted with orch and followed to SUCCEEDED, the
same submission id resubmitted (same spec: same job; other spec: refused), a long job submitted
with plain `ray job submit --working-dir` and stopped with orch (twice), both listed; clients
without the cluster's token refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.integration.local_head import VENV_BIN, LocalHead

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def head():
    h = LocalHead(num_cpus=3, gcs_port_from=6380)
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory, head):
    """A working dir to upload: the MNIST spec, plus junk in .venv/ and runs/ that must stay
    behind (the upload limit below is smaller than the junk)."""
    d = tmp_path_factory.mktemp("proj")
    spec = yaml.safe_load((ROOT / "jobs" / "mnist_mlp.yaml").read_text())
    spec["name"] = "mnist-remote"
    (d / "mnist_remote.yaml").write_text(yaml.safe_dump(spec))
    for junk in (".venv", "runs", "data", ".git"):
        (d / junk).mkdir()
        (d / junk / "big.bin").write_bytes(os.urandom(2 * 2**20))
    token_file = d.parent / "token"
    token_file.write_text(head.token + "\n")
    return {
        "dir": d,
        "spec": d / "mnist_remote.yaml",
        "token_file": token_file,
        "runs": d.parent / "shared-runs",
    }


def _cli_env(head, project) -> dict[str, str]:
    """What a user has: RAY_AUTH_MODE=token and the token in a file."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "",
        "RAY_AUTH_TOKEN_PATH": str(project["token_file"]),
    }


def orch(args, env, cwd=None):
    from orchestrator.cli import app

    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, args, env=env)
    finally:
        os.chdir(old)
    return res


def test_submit_small_job_follow_to_succeeded_and_resubmit(head, project):
    env = _cli_env(head, project)
    sid = f"small-{os.getpid()}"
    args = [
        "submit",
        "mnist_remote.yaml",
        "train.max_steps=20",
        "train.log_every=5",
        "resources.workers=1",
        f"storage_path={project['runs']}",
        "--address",
        head.dashboard_url,
        "--submission-id",
        sid,
        "--max-upload-mb",
        "1",
    ]
    res = orch(args, env, cwd=project["dir"])
    assert res.exit_code == 0, res.output + "\n" + head.diagnose()
    assert f"submitted {sid}" in res.output

    t0 = time.monotonic()
    res = orch(["logs", sid, "--follow", "--address", head.dashboard_url], env)
    follow_s = time.monotonic() - t0
    assert res.exit_code == 0, res.output + "\n" + head.diagnose()
    assert f"job {sid}: SUCCEEDED" in res.output
    # The driver's own last lines (orch run's summary) came through before the end.
    assert "final test accuracy" in res.output or "status" in res.output, res.output[-2000:]
    assert follow_s < 240

    res = orch(["status", sid, "--json", "--address", head.dashboard_url], env)
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["status"] == "SUCCEEDED"
    assert info["spec"] == "mnist_remote.yaml"
    assert info["entrypoint"].startswith("orch run mnist_remote.yaml")
    # The run wrote its directory where the override said (one node: a local path is fine).
    assert (project["runs"] / "mnist-remote" / "spec.resolved.yaml").exists()

    # Same id, same spec: the same job, nothing new submitted.
    res = orch(args, env, cwd=project["dir"])
    assert res.exit_code == 0, res.output
    assert "already submitted with this spec (SUCCEEDED)" in res.output
    # Same id, another spec: refused, naming the id.
    other = [a if a != "train.max_steps=20" else "train.max_steps=30" for a in args]
    res = orch(other, env, cwd=project["dir"])
    assert res.exit_code == 7, res.output  # ExitCode.CONFLICT
    assert f"submission id '{sid}' already names a job" in res.output


def _status(head, project, sid) -> str:
    res = orch(["status", sid, "--json", "--address", head.dashboard_url], _cli_env(head, project))
    assert res.exit_code == 0, res.output
    return json.loads(res.output)["status"]


def test_plain_ray_job_submit_long_job_then_stop_twice_and_list(head, project):
    env = _cli_env(head, project)
    sid = f"long-{os.getpid()}"
    # The plain form from the README: Ray's own CLI, the same entrypoint.
    cmd = [
        str(VENV_BIN / "ray"),
        "job",
        "submit",
        "--address",
        head.dashboard_url,
        "--submission-id",
        sid,
        "--no-wait",
        "--working-dir",
        str(project["dir"]),
        "--",
        "orch",
        "run",
        "mnist_remote.yaml",
        "train.epochs=1000",
        "resources.workers=1",
        f"storage_path={project['runs']}",
        "--name",
        "long",
    ]
    out = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:] + head.diagnose()

    deadline = time.monotonic() + 120
    status = _status(head, project, sid)
    while status == "PENDING" and time.monotonic() < deadline:
        time.sleep(1)
        status = _status(head, project, sid)
    assert status == "RUNNING"

    res = orch(["stop", sid, "--address", head.dashboard_url], env)
    assert res.exit_code == 0, res.output
    assert f"stop requested for {sid}: now STOPPED" in res.output
    res = orch(["stop", sid, "--address", head.dashboard_url], env)  # harmless the second time
    assert res.exit_code == 0, res.output
    assert "already ended (STOPPED)" in res.output

    res = orch(["list", "--format", "json", "--address", head.dashboard_url], env)
    assert res.exit_code == 0, res.output
    jobs = {j["submission_id"]: j for j in json.loads(res.output)}
    assert jobs[sid]["status"] == "STOPPED"
    small = [j for k, j in jobs.items() if k.startswith("small-")]
    assert small and small[0]["status"] == "SUCCEEDED"
    res = orch(["list", "--address", head.dashboard_url], env)
    assert sid in res.output and "STOPPED" in res.output and "SUCCEEDED" in res.output


def test_clients_without_the_token_are_refused(head, project):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    from orchestrator.cluster import jobs

    # Raw HTTP, no token: 401.
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(head.dashboard_url + "/api/jobs/", timeout=10)
    assert exc.value.code == 401
    # Ray's own client with another cluster's token: refused.
    with pytest.raises(AuthenticationError):
        JobSubmissionClient(
            head.dashboard_url, headers={"Authorization": "Bearer not-the-token"}
        ).list_jobs()
    # orch with token auth off: a clear error saying what to do.
    with pytest.raises(jobs.ClusterAuthError, match="requires its token and none was sent"):
        jobs.make_client(head.dashboard_url, env={"RAY_AUTH_MODE": "disabled"}).list_jobs()
    res = orch(
        ["list", "--address", head.dashboard_url],
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong", "RAY_AUTH_TOKEN_PATH": ""},
    )
    assert res.exit_code == jobs.ClusterAuthError.exit_code == 8, res.output
    assert "refused our token" in res.output
    # And with the token, orch gets in (the submit in the first test did too).
    res = orch(["list", "--address", head.dashboard_url], _cli_env(head, project))
    assert res.exit_code == 0, res.output


def test_upload_limit_is_checked_before_upload(head, project, tmp_path):
    from orchestrator.cluster import jobs

    proj = tmp_path / "p"
    shutil.copytree(
        project["dir"], proj, ignore=shutil.ignore_patterns(".venv", "runs", "data", ".git")
    )
    (proj / "weights.bin").write_bytes(os.urandom(2 * 2**20))
    res = orch(
        ["submit", "mnist_remote.yaml", "--address", head.dashboard_url, "--max-upload-mb", "1"],
        _cli_env(head, project),
        cwd=proj,
    )
    assert res.exit_code == jobs.UploadTooLargeError.exit_code, res.output
    assert "over the 1 MiB limit" in res.output and "weights.bin" in res.output
