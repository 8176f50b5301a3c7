"""The client side of the queue: connect to the cluster, find (or start) the queue actor,
and turn a spec into a queued job (its working dir packed once, here, and kept by the queue
until the job has ended, so a job that waits for hours still finds its code).

The client reaches the queue through Ray itself (ray.init to the cluster's GCS address, or
ray://HEAD:10001 through Ray Client): ORCH_QUEUE_ADDRESS, else a RAY_ADDRESS that is not the
Jobs API's http:// address, else `auto` (a head started on this machine).
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import ExitCode, OrchestratorError
from orchestrator.queue.service import ACTOR_NAME, NAMESPACE, QueueActor

ADDRESS_ENV = "ORCH_QUEUE_ADDRESS"


class QueueInputError(OrchestratorError):
    """Bad input to the queue: unknown queue, negative priority, a job that can never fit."""

    exit_code = ExitCode.BAD_INPUT


class QueueNotFoundError(QueueInputError):
    """No such job or queue."""

    exit_code = ExitCode.NOT_FOUND


class QueueResourcesError(QueueInputError):
    """A job that the cluster can never hold."""

    exit_code = ExitCode.RESOURCES


class QueueConflictError(QueueInputError):
    """A submission id that already names another queued job."""

    exit_code = ExitCode.CONFLICT


class QueueUnreachableError(OrchestratorError):
    exit_code = ExitCode.UNREACHABLE


_QUEUE_ERRORS: dict[int | None, type[QueueInputError]] = {
    ExitCode.NOT_FOUND: QueueNotFoundError,
    ExitCode.RESOURCES: QueueResourcesError,
    ExitCode.CONFLICT: QueueConflictError,
}


def ray_address(address: str | None = None) -> str:
    if address:
        return address
    if os.environ.get(ADDRESS_ENV):
        return os.environ[ADDRESS_ENV]
    ra = os.environ.get("RAY_ADDRESS", "")
    if ra and not ra.startswith(("http://", "https://")):
        return ra
    return "auto"


def connect(address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    addr = ray_address(address)
    saved = os.environ.pop("RAY_ADDRESS", None)  # an http:// one would confuse ray.init
    try:
        ray.init(
            address=addr,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise QueueUnreachableError(
            f"cannot reach the Ray cluster at {addr} for the queue: {exc}. Set "
            f"{ADDRESS_ENV}=HOST:GCS_PORT (or ray://HOST:10001 through a tunnel), or run this "
            "on the head"
        ) from None
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def handle(create: bool = True, state_dir: str | None = None):
    """The queue actor, started on the head on first use."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        if not create:
            raise QueueUnreachableError(
                "no queue on this cluster yet (orch submit --queue starts it)"
            ) from None
    head = next(
        (
            n["NodeID"]
            for n in ray.nodes()
            if n.get("Alive") and "node:__internal_head__" in n["Resources"]
        ),
        None,
    )
    opts: dict[str, Any] = {
        "name": ACTOR_NAME,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "max_concurrency": 16,
        "num_cpus": 0,
    }
    if head:
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=False)
    actor = ray.remote(QueueActor).options(**opts).remote(state_dir)
    ray.get(actor.info.remote())  # up (its errors surface here)
    return actor


def call(actor, method: str, *args: Any, **kwargs: Any) -> Any:
    import ray

    status, value, *code = ray.get(actor.call.remote(method, *args, **kwargs))
    if status == "error":
        # (status, text, exit code); a queue actor started by an older orch sends no code.
        raise _QUEUE_ERRORS.get(code[0] if code else None, QueueInputError)(value)
    return value


def pack_working_dir(working_dir: Path, excludes: list[str]) -> tuple[str, bytes]:
    """Ray's package of working_dir (its URI names the content), as Ray would upload it."""
    from ray._private.runtime_env.packaging import create_package, get_uri_for_directory

    # Ray logs every .gitignore it honours while packing; orch says what it uploads itself.
    for noisy in ("ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    uri = get_uri_for_directory(str(working_dir), include_gitignore=True, excludes=excludes)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "pkg.zip"
        create_package(
            str(working_dir), target, include_gitignore=True, excludes=excludes, logger=None
        )
        return uri, target.read_bytes()


def queued_job(
    spec_path: str,
    overrides: list[str],
    working_dir: str,
    excludes: list[str],
    max_upload_mb: float,
    queue: str | None,
    priority: int | None,
    preemptible: bool | None,
    retries: int | None,
    submission_id: str | None,
    run_name: str | None,
    sweep: bool = False,
    sweep_args: list[str] | None = None,
) -> tuple[dict[str, Any], Path, list[str]]:
    """The job row for a spec (validated here), its working dir and the excludes.

    sweep: the spec's sweep (`orch sweep SPEC --name ID --continue`, plus `sweep_args`) as a
    job of kind 'sweep': it holds nothing itself, and each trial queues for its own workers
    (orchestrator/queue/lease.py). The job's id is the sweep id."""
    from orchestrator.cluster.jobs import (
        DEFAULT_EXCLUDES,
        META_PREFIX,
        JobsInputError,
        _check_spec_uploaded,
        build_entrypoint,
        check_upload,
        fingerprint,
    )
    from orchestrator.spec import load_spec

    if priority is not None and priority < 0:
        raise QueueInputError(f"--priority {priority}: expected a whole number >= 0")
    if retries is not None and retries < 0:
        raise QueueInputError(f"--retries {retries}: expected a whole number >= 0")
    spec = load_spec(spec_path, overrides, check_extras=False)  # extras: checked on the cluster
    qs = spec.queue
    if sweep:
        from orchestrator.sweep.spec import trial_request, validate_sweep

        # Checked before anything else, as `orch sweep` checks it: one trial's request.
        workers, per_worker = trial_request(validate_sweep(spec), spec)
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise JobsInputError(f"--working-dir {working_dir}: not a directory")
    try:
        spec_rel = Path(spec_path).resolve().relative_to(wd).as_posix()
    except ValueError:
        raise JobsInputError(
            f"{spec_path} is outside the working_dir {wd}: the cluster only sees "
            "what is uploaded; move the spec under it or pass --working-dir"
        ) from None
    all_excludes = DEFAULT_EXCLUDES + list(excludes)
    _check_spec_uploaded(wd, spec_rel, all_excludes)
    check_upload(wd, all_excludes, max_upload_mb)
    sid = submission_id or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
    name = run_name or sid  # every queued job its own run: rerun after preemption resumes it
    if sweep:
        command = " ".join(["orch sweep --continue", *(shlex.quote(a) for a in sweep_args or [])])
    else:
        from orchestrator.spec import per_worker as worker_request

        workers, per_worker = spec.resources.workers, worker_request(spec.resources)
        command = "orch run"
    fp = fingerprint(spec.spec_hash(), name, {"command": command} if sweep else None)
    job = {
        "id": sid,
        "queue": queue or qs.name,
        "priority": qs.priority if priority is None else priority,
        "preemptible": qs.preemptible if preemptible is None else preemptible,
        "retries": qs.retries if retries is None else retries,
        "kind": "sweep" if sweep else "job",
        "workers": 0 if sweep else workers,
        "per_worker": per_worker,
        "entrypoint": build_entrypoint(spec_rel, overrides, name, command),
        "runtime_env": {
            "excludes": all_excludes,
            "env_vars": {"PYTHONUNBUFFERED": "1"},
        },
        "metadata": {
            f"{META_PREFIX}spec": spec_rel,
            f"{META_PREFIX}spec_hash": spec.spec_hash(),
            f"{META_PREFIX}fingerprint": fp,
            f"{META_PREFIX}workload": spec.workload,
            f"{META_PREFIX}run_name": name,
        },
        "fingerprint": fp,
        "spec": spec_rel,
        "run_name": name,
        "storage_path": spec.storage_path,
    }
    if sweep:
        job["trial_workers"] = workers  # what must fit the cluster: one trial
    return job, wd, all_excludes
