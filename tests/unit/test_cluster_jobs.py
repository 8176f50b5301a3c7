"""orchestrator.cluster.jobs without a cluster: token rules, addresses, the upload check, the
entrypoint, and idempotent submission ids against a stand-in Jobs API client."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from orchestrator.cluster import jobs
from orchestrator.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


# --- token -------------------------------------------------------------------------------------


def test_token_precedence_follows_ray(tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    path_file = tmp_path / "tok"
    path_file.write_text("from-path\n")
    read = jobs.read_token
    token_mode = {"RAY_AUTH_MODE": "token"}
    assert (
        read(
            {**token_mode, "RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(path_file)},
            home,
        )
        == "from-env"
    )
    assert read({**token_mode, "RAY_AUTH_TOKEN_PATH": str(path_file)}, home) == "from-path"
    assert read(token_mode, home) == "from-home"
    # Explicit token settings are enough without RAY_AUTH_MODE; the default file alone is not.
    assert read({"RAY_AUTH_TOKEN": "from-env"}, home) == "from-env"
    assert read({"RAY_AUTH_TOKEN_PATH": str(path_file)}, home) == "from-path"
    assert read({}, home) is None
    assert read({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"}, home) is None
    assert jobs.auth_headers({"RAY_AUTH_TOKEN": "abc"}) == {"Authorization": "Bearer abc"}


def test_token_errors_say_what_to_do(tmp_path):
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    with pytest.raises(
        jobs.ClusterAuthError,
        match=r"no token found: put the cluster's token in ~/.ray/auth_token",
    ):
        jobs.read_token({"RAY_AUTH_MODE": "token"}, empty_home)
    with pytest.raises(jobs.ClusterAuthError, match="cannot be read"):
        jobs.read_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, empty_home)
    (tmp_path / "blank").write_text("  \n")
    with pytest.raises(jobs.ClusterAuthError, match="is empty"):
        jobs.read_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "blank")}, empty_home)


def test_addresses(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs.normalise_address(None) == "http://127.0.0.1:8265"
    assert jobs.normalise_address("10.0.0.5:8265/") == "http://10.0.0.5:8265"
    assert jobs.normalise_address("https://ray.example.com") == "https://ray.example.com"
    with pytest.raises(jobs.JobsApiError, match="not the ray:// client address"):
        jobs.normalise_address("ray://head:10001")


def test_an_explicit_address_wins_over_rays_environment(monkeypatch):
    # Ray's own client lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is
    # given; `orch submit --address X` must reach X even with `orch run`'s RAY_ADDRESS exported.
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")
    assert jobs.normalise_address("10.0.0.5:8265") == "http://10.0.0.5:8265"
    with jobs._address_env_hidden():
        from ray.dashboard.utils import get_address_for_submission_client

        assert get_address_for_submission_client("http://10.0.0.5:8265") == "http://10.0.0.5:8265"
    assert os.environ["RAY_ADDRESS"] == "http://127.0.0.1:9"  # restored
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    assert jobs.normalise_address(None) == "http://127.0.0.1:9"  # an http RAY_ADDRESS counts
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not the Jobs API
    assert jobs.normalise_address(None) == "http://127.0.0.1:8265"


# --- working dir -------------------------------------------------------------------------------


def _project(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    (d / "jobs").mkdir(parents=True)
    spec = yaml.safe_load((ROOT / "jobs" / "mnist_mlp.yaml").read_text())
    (d / "jobs" / "small.yaml").write_text(yaml.safe_dump(spec))
    (d / "code.py").write_text("x = 1\n" * 100)
    for junk in (".venv", "runs", "data", ".git"):
        (d / junk).mkdir()
        (d / junk / "big.bin").write_bytes(b"\0" * (3 * 2**20))
    (d / "pkg" / "data").mkdir(parents=True)  # only the top-level data/ is excluded
    (d / "pkg" / "data" / "table.csv").write_text("a,b\n")
    return d


def test_upload_size_leaves_venv_runs_data_git_behind(tmp_path):
    d = _project(tmp_path)
    size = jobs.upload_size(d, jobs.DEFAULT_EXCLUDES)
    names = {n for n, _ in size.largest}
    assert size.total_bytes < 2**20
    assert {"code.py", "jobs", "pkg"} <= names
    assert not names & {".venv", "runs", "data", ".git"}
    (d / ".gitignore").write_text("code.py\n")  # Ray honours .gitignore; so does the check
    assert "code.py" not in {n for n, _ in jobs.upload_size(d, jobs.DEFAULT_EXCLUDES).largest}


def test_upload_over_the_limit_is_refused_naming_the_biggest(tmp_path):
    d = _project(tmp_path)
    (d / "weights.bin").write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(jobs.UploadTooLargeError) as exc:
        jobs.check_upload(d, jobs.DEFAULT_EXCLUDES, max_mb=1)
    text = str(exc.value)
    assert "over the 1 MiB limit" in text and "weights.bin 2.0 MiB" in text and ".rayignore" in text
    assert (
        jobs.check_upload(d, jobs.DEFAULT_EXCLUDES + ["weights.bin"], max_mb=1).total_bytes < 2**20
    )


def test_entrypoint_and_fingerprint():
    ep = jobs.build_entrypoint("jobs/a b.yaml", ["train.lr=3e-4", "train.hidden=[64, 32]"], "r1")
    assert ep == "orch run 'jobs/a b.yaml' train.lr=3e-4 'train.hidden=[64, 32]' --name r1"
    assert jobs.fingerprint("abc", None) == jobs.fingerprint("abc", "")
    assert jobs.fingerprint("abc", None) != jobs.fingerprint("abd", None)
    assert jobs.fingerprint("abc", "x") != jobs.fingerprint("abc", "y")


# --- submit against a stand-in client ------------------------------------------------------------


class FakeClient:
    """The slice of JobSubmissionClient that submit() uses."""

    def __init__(self):
        self._headers = {"Authorization": "Bearer t"}
        self.jobs: dict[str, SimpleNamespace] = {}
        self.submitted: list[dict] = []

    def get_job_info(self, job_id):
        if job_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self.jobs[job_id]

    def submit_job(self, *, entrypoint, runtime_env, submission_id, metadata, **options):
        if submission_id in self.jobs:
            raise RuntimeError(
                "Request failed with status code 400: "
                f"Job with submission_id {submission_id} already exists."
            )
        assert set(options) <= {
            "entrypoint_num_cpus",
            "entrypoint_num_gpus",
            "entrypoint_memory",
            "entrypoint_resources",
        }, options  # JobSubmissionClient.submit_job's own names
        self.submitted.append(
            dict(entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata, **options)
        )
        self.jobs[submission_id] = SimpleNamespace(
            metadata=metadata, entrypoint=entrypoint, status=SimpleNamespace(value="PENDING")
        )
        return submission_id


def test_submit_is_idempotent_per_submission_id(tmp_path):
    d = _project(tmp_path)
    client = FakeClient()
    spec = str(d / "jobs" / "small.yaml")
    kw = dict(address="http://h:8265", working_dir=str(d), client=client)
    first = jobs.submit(spec, ["train.lr=0.01"], submission_id="job-1", **kw)
    assert not first.reused and first.submission_id == "job-1"
    sent = client.submitted[0]
    assert sent["entrypoint"] == "orch run jobs/small.yaml train.lr=0.01"
    assert sent["runtime_env"]["working_dir"] == str(d.resolve())
    assert {"/.venv", "/runs", "/data", ".git"} <= set(sent["runtime_env"]["excludes"])
    assert sent["metadata"]["orch_spec"] == "jobs/small.yaml"

    # Same id, same resolved spec (written differently): the same job, nothing submitted.
    again = jobs.submit(spec, ["train.lr=1e-2"], submission_id="job-1", **kw)
    assert again.reused and again.submission_id == "job-1" and len(client.submitted) == 1
    # Same id, another spec: refused.
    with pytest.raises(
        jobs.SubmissionConflictError, match="'job-1' already names a job .* jobs/small.yaml"
    ):
        jobs.submit(spec, ["train.lr=0.02"], submission_id="job-1", **kw)
    # No id: a new, greppable one each time.
    other = jobs.submit(spec, [], **kw)
    assert other.submission_id.startswith("mnist-mlp-") and len(client.submitted) == 2


def test_submit_checks_spec_and_paths_before_uploading(tmp_path):
    d = _project(tmp_path)
    client = FakeClient()
    with pytest.raises(SpecError, match="train.lr"):
        jobs.submit(
            str(d / "jobs" / "small.yaml"), ["train.lr=-1"], working_dir=str(d), client=client
        )
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((d / "jobs" / "small.yaml").read_text())
    with pytest.raises(jobs.JobsApiError, match="outside the working_dir"):
        jobs.submit(str(outside), [], working_dir=str(d), client=client)
    (d / "runs" / "s.yaml").write_text((d / "jobs" / "small.yaml").read_text())
    with pytest.raises(jobs.JobsApiError, match="lies in an excluded path"):
        jobs.submit(str(d / "runs" / "s.yaml"), [], working_dir=str(d), client=client)
    (d / "big.bin").write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(jobs.UploadTooLargeError):
        jobs.submit(
            str(d / "jobs" / "small.yaml"), [], working_dir=str(d), client=client, max_upload_mb=1
        )
    assert client.submitted == []


def test_jobs_api_options_reach_the_submission(tmp_path):
    d = _project(tmp_path)
    client = FakeClient()
    spec = str(d / "jobs" / "small.yaml")
    user_env = jobs.parse_json_option(
        "--runtime-env-json",
        '{"env_vars": {"NCCL_DEBUG": "INFO", "PYTHONUNBUFFERED": "0"}, "pip": ["einops"], '
        '"excludes": ["/ckpts"]}',
    )
    entry = jobs.entrypoint_options(
        1.5, 0, 2**30, jobs.parse_json_option("--entrypoint-resources", '{"head": 1}')
    )
    kw = dict(address="http://h:8265", working_dir=str(d), client=client)
    jobs.submit(spec, [], submission_id="opt-1", runtime_env=user_env, entrypoint=entry, **kw)
    sent = client.submitted[0]
    env = sent["runtime_env"]
    assert env["working_dir"] == str(d.resolve()) and env["pip"] == ["einops"]
    assert {"/.venv", "/runs", "/ckpts"} <= set(env["excludes"])
    assert env["env_vars"] == {  # the user's win
        "PYTHONUNBUFFERED": "0",
        "NCCL_DEBUG": "INFO",
        "RAY_JOB_STOP_WAIT_TIME_S": "60",  # time for the checkpoint `orch stop` asks for
    }
    assert sent["entrypoint_num_cpus"] == 1.5 and sent["entrypoint_num_gpus"] == 0
    assert sent["entrypoint_memory"] == 2**30
    assert sent["entrypoint_resources"] == {"head": 1.0}
    # The options are part of what makes the job: again with the same ones, the same job...
    again = jobs.submit(
        spec, [], submission_id="opt-1", runtime_env=user_env, entrypoint=entry, **kw
    )
    assert again.reused and len(client.submitted) == 1
    # ... with others, refused.
    with pytest.raises(jobs.SubmissionConflictError):
        jobs.submit(spec, [], submission_id="opt-1", **kw)
    # Without options: no entrypoint_* sent (Ray's defaults), orch's env as before.
    jobs.submit(spec, [], **kw)
    plain = client.submitted[1]
    assert not any(k.startswith("entrypoint_") for k in plain)
    assert plain["runtime_env"]["env_vars"] == {
        "PYTHONUNBUFFERED": "1",
        "RAY_JOB_STOP_WAIT_TIME_S": "60",
    }


def test_jobs_api_options_are_checked(tmp_path):
    for text in ("{bad", "[1]", '"x"'):
        with pytest.raises(jobs.JobsInputError, match="--runtime-env-json") as exc:
            jobs.parse_json_option("--runtime-env-json", text)
        assert exc.value.exit_code == 2
    with pytest.raises(jobs.JobsInputError, match="--entrypoint-resources: 'GPU'"):
        jobs.entrypoint_options(resources={"GPU": "two"})
    with pytest.raises(jobs.JobsInputError, match="--entrypoint-num-cpus -1"):
        jobs.entrypoint_options(num_cpus=-1)
    with pytest.raises(jobs.JobsInputError, match="working_dir is set by --working-dir"):
        jobs.merge_runtime_env({"working_dir": "s3://b/x.zip"}, "/p", [])
    with pytest.raises(jobs.JobsInputError, match="env_vars must map names to strings"):
        jobs.merge_runtime_env({"env_vars": {"N": 1}}, "/p", [])
    assert jobs.entrypoint_options() == {}


def test_submit_cli_passes_the_options(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    d = _project(tmp_path)
    client = FakeClient()
    monkeypatch.setattr(jobs, "make_client", lambda address: client)
    args = ["submit", str(d / "jobs" / "small.yaml"), "--working-dir", str(d)]
    args += ["--address", "http://h:8265", "--entrypoint-num-gpus", "1"]
    args += ["--runtime-env-json", '{"env_vars": {"A": "b"}}', "--entrypoint-resources", "{}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    sent = client.submitted[0]
    assert sent["entrypoint_num_gpus"] == 1.0 and sent["entrypoint_resources"] == {}
    assert sent["runtime_env"]["env_vars"]["A"] == "b"
    res = CliRunner().invoke(app, [*args, "--queue", "default"])
    assert res.exit_code == 2 and "not with the queue" in res.output


def test_stop_twice_is_harmless():
    client = FakeClient()
    client.jobs["j"] = SimpleNamespace(
        metadata={}, entrypoint="x", status=SimpleNamespace(value="RUNNING")
    )
    calls = []

    def stop_job(job):
        calls.append(job)
        client.jobs[job].status.value = "STOPPED"
        return True

    client.stop_job = stop_job
    assert jobs.stop(client, "http://h", "j", wait_s=1) == (True, "STOPPED")
    assert jobs.stop(client, "http://h", "j", wait_s=1) == (False, "STOPPED")
    assert calls == ["j"]
    with pytest.raises(jobs.JobsApiError, match="no job 'nope'"):
        jobs.stop(client, "http://h", "nope")


def test_default_excludes_match_the_issue():
    for d in (".venv", "runs", "data", ".git"):
        assert any(p.strip("/") == d for p in jobs.DEFAULT_EXCLUDES)
    assert os.sep == "/"  # the anchored patterns assume POSIX paths
