"""The Ray Jobs API client behind `orch submit | logs | status | stop | list`: submit
`orch run` jobs to a Ray cluster and manage them.

    ray dashboard cluster/gpu.yaml &      # tunnel: the head's Jobs API on 127.0.0.1:8265
    export RAY_AUTH_MODE=token            # token from ~/.ray/auth_token (or RAY_AUTH_TOKEN[_PATH])
    orch submit jobs/mnist_mlp.yaml --address http://127.0.0.1:8265 train.lr=3e-4 \
        --submission-id mnist-lr3
    orch submit ... --submission-id mnist-lr3        # again: the same job, not a second one
    orch status mnist-lr3 | orch logs mnist-lr3 --follow | orch stop mnist-lr3 | orch list

The job runs `orch run SPEC OVERRIDES` on the cluster, with this directory uploaded as its
working_dir (minus .venv, runs, data, .git and what .gitignore / .rayignore list; the size is
checked before uploading). The same job without orch on your side:

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- orch run jobs/mnist_mlp.yaml

Token authentication follows Ray's rules: with RAY_AUTH_MODE=token the token is RAY_AUTH_TOKEN,
else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token. Setting RAY_AUTH_TOKEN or
RAY_AUTH_TOKEN_PATH is enough for orch on its own; RAY_AUTH_MODE=disabled sends none.

Sections: token (read_token), client (make_client, normalise_address, translate_errors),
working dir (upload_size, check_upload), submit (submit: idempotent per submission id),
status, logs, stop, list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ExitCode, OrchestratorError
from orchestrator.rundir import is_uri
from orchestrator.worker.stop import JOB_STOP_WAIT_S

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Anchored ("/runs") so a package directory called data/ deeper down still goes up.
DEFAULT_EXCLUDES = [
    "/.venv",
    "/runs",
    "/data",
    ".git",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
]
DEFAULT_MAX_UPLOAD_MB = 100.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
META_PREFIX = "orch_"


class JobsApiError(OrchestratorError):
    """The Jobs API refused or failed a request. The subclasses say why, each with its exit
    code (orchestrator/errors.py)."""

    exit_code = ExitCode.FAILED


class JobsInputError(JobsApiError):
    """Bad input to submit: an option, the address, the working dir or where the spec lies."""

    exit_code = ExitCode.BAD_INPUT


class ClusterUnreachableError(JobsApiError):
    """No Jobs API answers at the address."""

    exit_code = ExitCode.UNREACHABLE


class JobNotFoundError(JobsApiError):
    """No job of that submission id on the cluster."""

    exit_code = ExitCode.NOT_FOUND


class ClusterAuthError(JobsApiError):
    """The cluster wants its token, or refused the one we sent."""

    exit_code = ExitCode.AUTH


class SubmissionConflictError(JobsApiError):
    """A submission id already names a job with another spec."""

    exit_code = ExitCode.CONFLICT


class UploadTooLargeError(JobsInputError):
    """The working_dir to upload is over the limit."""


# ---------------------------------------------------------------------------------------------
# Token


def read_token(env: dict[str, str] | None = None, home: Path | None = None) -> str | None:
    """The cluster token per Ray's rules, or None when none is to be sent.

    RAY_AUTH_MODE=disabled: none. RAY_AUTH_MODE=token: RAY_AUTH_TOKEN, else the file
    RAY_AUTH_TOKEN_PATH (must be readable and non-empty), else ~/.ray/auth_token, else an error.
    RAY_AUTH_MODE unset: the token only when RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is set (an
    explicit choice); ~/.ray/auth_token alone is not sent to an address that did not ask for it.
    """
    env = os.environ if env is None else env
    mode = (env.get("RAY_AUTH_MODE") or "").strip().lower()
    if mode == "disabled":
        return None
    explicit = bool((env.get("RAY_AUTH_TOKEN") or "").strip() or env.get("RAY_AUTH_TOKEN_PATH"))
    if mode != "token" and not explicit:
        return None
    token = (env.get("RAY_AUTH_TOKEN") or "").strip()
    if token:
        return token
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ClusterAuthError(
                f"RAY_AUTH_TOKEN_PATH={path} cannot be read: {exc.strerror}"
            ) from None
        if not token:
            raise ClusterAuthError(f"RAY_AUTH_TOKEN_PATH={path} is empty")
        return token
    default = (home or Path.home()) / ".ray" / "auth_token"
    if default.is_file() and default.read_text().strip():
        return default.read_text().strip()
    raise ClusterAuthError(
        "RAY_AUTH_MODE=token but no token found: put the cluster's token in ~/.ray/auth_token, "
        "or set RAY_AUTH_TOKEN_PATH=FILE or RAY_AUTH_TOKEN. On the head, `ray get-auth-token` "
        "prints it; with cluster/gpu.yaml it is the ~/.ray/auth_token you launched with."
    )


def auth_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    token = read_token(env)
    return {"Authorization": f"Bearer {token}"} if token else {}


_AUTH_HELP = (
    "export RAY_AUTH_MODE=token and put the cluster's token in ~/.ray/auth_token (or set "
    "RAY_AUTH_TOKEN_PATH=FILE / RAY_AUTH_TOKEN). `ray get-auth-token` on the head prints it."
)


# ---------------------------------------------------------------------------------------------
# Client


def make_client(address: str | None = None, env: dict[str, str] | None = None):
    """A JobSubmissionClient for `address` that sends the token (see read_token)."""
    from ray.job_submission import JobSubmissionClient

    address = normalise_address(address)
    headers = auth_headers(env)
    with translate_errors(address, sent_token=bool(headers)), _address_env_hidden():
        return JobSubmissionClient(address, headers=headers)


@contextmanager
def _address_env_hidden() -> Iterator[None]:
    """Ray lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address a client is given
    (ray.dashboard.utils.get_address_for_submission_client); normalise_address has already
    chosen (--address first, then those variables), so hide them while the client is made."""
    names = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def normalise_address(address: str | None) -> str:
    ray_address = os.environ.get("RAY_ADDRESS", "")
    address = (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or (ray_address if ray_address.startswith(("http://", "https://")) else None)
        or DEFAULT_ADDRESS
    ).strip()
    if address.startswith("ray://"):
        raise JobsInputError(
            f"--address {address}: the Jobs API is the dashboard's HTTP address, "
            "e.g. http://127.0.0.1:8265 (not the ray:// client address)"
        )
    if not is_uri(address):
        address = f"http://{address}"
    return address.rstrip("/")


@contextmanager
def translate_errors(
    address: str, sent_token: bool = False, job: str | None = None
) -> Iterator[None]:
    """Ray's client errors -> errors that say what to do."""
    try:
        yield
    except ConnectionError as exc:
        raise ClusterUnreachableError(
            f"cannot reach the Ray Jobs API at {address}: is the head up, and the "
            "tunnel open (`ray dashboard cluster/gpu.yaml` or `kubectl port-forward "
            f"svc/HEAD-svc 8265:8265`)? ({exc})"
        ) from None
    except RuntimeError as exc:
        text = str(exc)
        if job and ("does not exist" in text or "404" in text):
            raise JobNotFoundError(f"no job '{job}' on {address} (see `orch list`)") from None
        raise JobsApiError(f"Jobs API at {address}: {text}") from None
    except OrchestratorError:
        raise
    except Exception as exc:
        from ray.exceptions import AuthenticationError  # Ray is imported by then

        if not isinstance(exc, AuthenticationError):
            raise
        if sent_token:
            raise ClusterAuthError(
                f"the cluster at {address} refused our token (wrong cluster "
                f"or an old token). {_AUTH_HELP}"
            ) from None
        raise ClusterAuthError(
            f"the cluster at {address} requires its token and none was sent. {_AUTH_HELP}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Working dir


@dataclass
class UploadSize:
    total_bytes: int
    files: int
    largest: list[tuple[str, int]]  # top-level entries by size


def ray_default_excludes() -> list[str]:
    """What Ray leaves out of every working_dir (ray_constants.RAY_RUNTIME_ENV_DEFAULT_EXCLUDES)."""
    val = os.environ.get("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", ".git,.venv,venv,__pycache__")
    return [x.strip() for x in val.split(",") if x.strip()]


def _pathspec(lines: list[str]):
    """gitignore-style patterns, as Ray matches working_dir excludes (it vendors pathspec)."""
    import pathspec

    try:
        return pathspec.PathSpec.from_lines("gitignore", lines)
    except (KeyError, LookupError):  # pathspec < 0.12 names it gitwildmatch
        return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def upload_size(working_dir: str | Path, excludes: list[str]) -> UploadSize:
    """Bytes Ray would pack from working_dir, walked the way Ray walks it
    (ray._private.runtime_env.packaging._dir_travel): Ray's default excludes and `excludes`
    relative to the root, plus each folder's .gitignore (unless
    RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1) and .rayignore, relative to that folder."""
    root = Path(working_dir).resolve()
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    per_top: dict[str, int] = {}
    count = 0
    ignores = [(root, _pathspec(ray_default_excludes() + list(excludes)))]

    def skipped(path: Path) -> bool:
        return any(
            base != path
            and spec.match_file(path.relative_to(base).as_posix() + ("/" if path.is_dir() else ""))
            for base, spec in ignores
        )

    def travel(path: Path) -> None:
        nonlocal count
        added = 0
        if path.is_dir():
            names = ([".gitignore"] if include_gitignore else []) + [".rayignore"]
            for name in names:
                f = path / name
                if f.is_file():
                    ignores.append((path, _pathspec(f.read_text(errors="replace").splitlines())))
                    added += 1
        if path == root or not skipped(path):
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                top = path.relative_to(root).parts[0]
                per_top[top] = per_top.get(top, 0) + size
                count += 1
            elif path.is_dir():
                for sub in sorted(path.iterdir()):
                    travel(sub)
        del ignores[len(ignores) - added :]

    travel(root)
    largest = sorted(per_top.items(), key=lambda kv: -kv[1])[:5]
    return UploadSize(sum(per_top.values()), count, largest)


def check_upload(working_dir: str | Path, excludes: list[str], max_mb: float) -> UploadSize:
    size = upload_size(working_dir, excludes)
    if size.total_bytes > max_mb * 2**20:
        biggest = ", ".join(f"{name} {n / 2**20:.1f} MiB" for name, n in size.largest)
        raise UploadTooLargeError(
            f"working_dir {working_dir} is {size.total_bytes / 2**20:.1f} MiB in {size.files} "
            f"files after excludes, over the {max_mb:g} MiB limit (--max-upload-mb). "
            f"Largest: {biggest}. "
            "Add big files or folders to .rayignore or --exclude, or put data on shared storage "
            "(s3://, gs://, NFS) and point data.path at it."
        )
    return size


# ---------------------------------------------------------------------------------------------
# Submit


@dataclass
class Submission:
    submission_id: str
    reused: bool  # True: that id already ran this same spec; nothing was submitted
    status: str
    entrypoint: str
    upload_mb: float = 0.0


def fingerprint(spec_hash: str, run_name: str | None, options: dict | None = None) -> str:
    """What makes two submissions 'the same job': the resolved spec and the run name, and the
    Jobs API options (runtime_env, entrypoint resources) where any were given."""
    what: dict[str, Any] = {"spec_hash": spec_hash, "run_name": run_name or ""}
    if options:
        what["options"] = options
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_json_option(option: str, text: str | None) -> dict[str, Any] | None:
    """A JSON object given on the command line (Ray's --runtime-env-json,
    --entrypoint-resources), or JobsInputError (exit 2) naming the option."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobsInputError(f"{option} {text!r}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise JobsInputError(
            f"{option} {text!r}: expected a JSON object, e.g. "
            + ('\'{"env_vars": {"K": "V"}}\'' if "runtime" in option else "'{\"TPU\": 1}'")
        )
    return value


def entrypoint_options(
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The entrypoint_* arguments of JobSubmissionClient.submit_job that were given, checked
    as Ray checks them (numbers >= 0; resources: names to numbers)."""
    out: dict[str, Any] = {}
    for name, value in (
        ("entrypoint_num_cpus", num_cpus),
        ("entrypoint_num_gpus", num_gpus),
        ("entrypoint_memory", memory),
    ):
        if value is None:
            continue
        if value < 0:
            raise JobsInputError(f"--{name.replace('_', '-')} {value:g}: expected a number >= 0")
        out[name] = value
    if resources is not None:
        for k, v in resources.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise JobsInputError(
                    f"--entrypoint-resources: {k!r} must be a number >= 0 (given {v!r})"
                )
        out["entrypoint_resources"] = {k: float(v) for k, v in resources.items()}
    return out


def merge_runtime_env(
    user: dict[str, Any] | None,
    working_dir: str,
    excludes: list[str],
    env_vars: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The job's runtime_env: the user's --runtime-env-json as the base (pip, conda,
    py_modules, ... pass through), then what orch builds. working_dir is --working-dir's
    alone (orch checks the spec lies in it and sizes the upload); excludes are orch's plus the
    user's; env_vars: orch's PYTHONUNBUFFERED=1 and RAY_JOB_STOP_WAIT_TIME_S (time for the
    checkpoint `orch stop` asks for before Ray's SIGKILL; Ray's default is 3 s), then the
    user's JSON, then `env_vars`."""
    env = dict(user or {})
    if "working_dir" in env:
        raise JobsInputError(
            "--runtime-env-json: working_dir is set by --working-dir (orch checks that the spec "
            "lies in it and sizes the upload); drop it from the JSON"
        )
    user_excludes = env.pop("excludes", None) or []
    if not isinstance(user_excludes, list) or not all(isinstance(x, str) for x in user_excludes):
        raise JobsInputError("--runtime-env-json: excludes must be a list of strings")
    user_vars = env.pop("env_vars", None) or {}
    if not isinstance(user_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in user_vars.items()
    ):
        raise JobsInputError(
            "--runtime-env-json: env_vars must map names to strings, e.g. "
            '{"env_vars": {"NCCL_DEBUG": "INFO"}}'
        )
    env["working_dir"] = working_dir
    env["excludes"] = list(excludes) + [x for x in user_excludes if x not in excludes]
    env["env_vars"] = {
        "PYTHONUNBUFFERED": "1",
        "RAY_JOB_STOP_WAIT_TIME_S": str(JOB_STOP_WAIT_S),
        **user_vars,
        **(env_vars or {}),
    }
    return env


def build_entrypoint(
    spec_rel: str, overrides: list[str], run_name: str | None, command: str = "orch run"
) -> str:
    parts = shlex.split(command) + [spec_rel, *overrides]
    if run_name:
        parts += ["--name", run_name]
    return " ".join(shlex.quote(p) for p in parts)


def submit(
    spec_path: str,
    overrides: list[str] | None = None,
    address: str | None = None,
    submission_id: str | None = None,
    working_dir: str = ".",
    run_name: str | None = None,
    excludes: list[str] | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    env_vars: dict[str, str] | None = None,
    client=None,
    runtime_env: dict[str, Any] | None = None,
    entrypoint: dict[str, Any] | None = None,
    sweep: bool = False,
) -> Submission:
    """Validate the spec here, then submit `orch run SPEC OVERRIDES` with working_dir uploaded.
    sweep: `orch sweep SPEC OVERRIDES --name ID --continue` instead (the sweep id is the run
    name, else the submission id), so a resubmission after a lost driver continues it.

    runtime_env: the user's runtime_env (--runtime-env-json), merged with orch's by
    merge_runtime_env. entrypoint: entrypoint_num_cpus / _num_gpus / _memory / _resources for
    submit_job (see entrypoint_options).

    With a submission id: the same id and the same resolved spec (and run name, and options)
    return the existing job; the same id with another spec raises SubmissionConflictError.
    """
    from orchestrator.spec import load_spec

    overrides = list(overrides or [])
    # Every spec error here, before anything is uploaded; the extras it needs are checked by
    # the job's own `orch run` on the cluster, which is where they must be installed.
    spec = load_spec(spec_path, overrides, check_extras=False)
    if sweep:
        from orchestrator.sweep.spec import validate_sweep

        validate_sweep(spec)
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise JobsInputError(f"--working-dir {working_dir}: not a directory")
    spec_abs = Path(spec_path).resolve()
    try:
        spec_rel = spec_abs.relative_to(wd).as_posix()
    except ValueError:
        raise JobsInputError(
            f"{spec_path} is outside the working_dir {wd}: the cluster only sees "
            "what is uploaded; move the spec under it or pass --working-dir"
        ) from None
    all_excludes = DEFAULT_EXCLUDES + list(excludes or [])
    job_env = merge_runtime_env(runtime_env, str(wd), all_excludes, env_vars)
    all_excludes = job_env["excludes"]
    _check_spec_uploaded(wd, spec_rel, all_excludes)
    entrypoint_kw = dict(entrypoint or {})
    options = {k: v for k, v in (("runtime_env", runtime_env), *entrypoint_kw.items()) if v}

    sid = submission_id or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
    if sweep:
        run_name = run_name or sid
        options = {**options, "command": "orch sweep"}
    fp = fingerprint(spec.spec_hash(), run_name, options)
    command = build_entrypoint(
        spec_rel, overrides, run_name, "orch sweep --continue" if sweep else "orch run"
    )
    address = normalise_address(address)
    client = client or make_client(address)
    sent_token = "Authorization" in getattr(client, "_headers", {})

    if submission_id:
        found = _existing(client, address, submission_id, fp, spec_rel, sent_token)
        if found is not None:
            return found
    size = check_upload(wd, all_excludes, max_upload_mb)
    metadata = {
        f"{META_PREFIX}spec": spec_rel,
        f"{META_PREFIX}spec_hash": spec.spec_hash(),
        f"{META_PREFIX}fingerprint": fp,
        f"{META_PREFIX}workload": spec.workload,
        f"{META_PREFIX}run_name": run_name or spec.name,
    }
    try:
        job_id = _submit_retrying(
            client,
            address,
            sent_token,
            entrypoint=command,
            runtime_env=job_env,
            submission_id=sid,
            metadata=metadata,
            **entrypoint_kw,
        )
    except JobsApiError as exc:
        # Two submits with one id at once: the loser finds the winner's job here.
        if submission_id and "already exists" in str(exc):
            found = _existing(client, address, submission_id, fp, spec_rel, sent_token)
            if found is not None:
                return found
        raise
    return Submission(job_id, False, "PENDING", command, size.total_bytes / 2**20)


def _submit_retrying(
    client, address: str, sent_token: bool, retry_s: float = 60.0, **kwargs
) -> str:
    """submit_job, retried while the head says its job agent is not up yet (right after
    `ray up` / `ray start`: "No available agent to submit job, please try again later")."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            with translate_errors(address, sent_token):
                return client.submit_job(**kwargs)
        except JobsApiError as exc:
            if "try again later" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def _check_spec_uploaded(wd: Path, spec_rel: str, excludes: list[str]) -> None:
    parts = Path(spec_rel).parts
    spec = _pathspec(ray_default_excludes() + list(excludes))
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i]) + ("/" if i < len(parts) else "")
        if spec.match_file(sub):
            raise JobsInputError(
                f"{spec_rel} lies in an excluded path ({sub.rstrip('/')}): "
                "it would not be uploaded; move the spec elsewhere"
            )


def _existing(client, address, submission_id, fp, spec_rel, sent_token) -> Submission | None:
    info = get_info(client, address, submission_id, sent_token, missing_ok=True)
    if info is None:
        return None
    meta = info.metadata or {}
    if meta.get(f"{META_PREFIX}fingerprint") == fp:
        return Submission(submission_id, True, str(info.status.value), info.entrypoint)
    theirs = meta.get(f"{META_PREFIX}spec")
    what = (
        f"spec {theirs} (hash {meta.get(f'{META_PREFIX}spec_hash')})"
        if theirs
        else f"entrypoint {info.entrypoint!r}"
    )
    raise SubmissionConflictError(
        f"submission id '{submission_id}' already names a job ({info.status.value}) with {what}; "
        f"this is {spec_rel} with other settings. Use another --submission-id, or leave it out."
    )


def get_info(client, address: str, job: str, sent_token: bool = False, missing_ok: bool = False):
    try:
        with translate_errors(address, sent_token, job=job):
            return client.get_job_info(job)
    except JobNotFoundError:
        if missing_ok:
            return None
        raise


# ---------------------------------------------------------------------------------------------
# Status, logs, stop, list


def info_dict(info) -> dict[str, Any]:
    def ts(ms):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""

    return {
        "submission_id": info.submission_id,
        "status": info.status.value,
        "entrypoint": info.entrypoint,
        "message": info.message or "",
        "start_time": ts(info.start_time),
        "end_time": ts(info.end_time),
        "driver_exit_code": info.driver_exit_code,
        "spec": (info.metadata or {}).get(f"{META_PREFIX}spec", ""),
        "spec_hash": (info.metadata or {}).get(f"{META_PREFIX}spec_hash", ""),
        "metadata": dict(info.metadata or {}),
    }


def follow_logs(client, address: str, job: str, write=print) -> str:
    """Stream a job's logs to the last line; returns its final status."""
    import asyncio

    async def tail():
        async for chunk in client.tail_job_logs(job):
            write(chunk)

    sent = "Authorization" in getattr(client, "_headers", {})
    get_info(client, address, job, sent)  # a clear error for unknown jobs before streaming
    with translate_errors(address, sent, job=job):
        asyncio.run(tail())
    return wait_terminal(client, address, job, timeout_s=30.0)


def wait_terminal(
    client, address: str, job: str, timeout_s: float = 60.0, every: float = 0.5
) -> str:
    deadline = time.monotonic() + timeout_s
    sent = "Authorization" in getattr(client, "_headers", {})
    while True:
        status = get_info(client, address, job, sent).status.value
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(every)


def stop(client, address: str, job: str, wait_s: float = 30.0) -> tuple[bool, str]:
    """Ask Ray to stop a job. Returns (stop requested now, status). Stopping a job that has
    already ended is harmless: (False, its final status)."""
    sent = "Authorization" in getattr(client, "_headers", {})
    status = get_info(client, address, job, sent).status.value
    if status in TERMINAL:
        return False, status
    with translate_errors(address, sent, job=job):
        requested = client.stop_job(job)
    if wait_s > 0:
        status = wait_terminal(client, address, job, timeout_s=wait_s)
    return bool(requested), status
