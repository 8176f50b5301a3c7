"""Connecting to Ray: an embedded local Ray by default, a cluster when an address is given.

    orch run SPEC                                  # embedded single-node Ray, stopped at exit
    orch run SPEC --address auto                   # a running local head (ray start --head)
    RAY_ADDRESS=ray://HEAD:10001 orch run SPEC     # a cluster
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

from orchestrator.errors import InsufficientResourcesError

_LOCAL_ADDRESS: str | None = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_address() -> str | None:
    """GCS address of the embedded Ray this process started, if any."""
    return _LOCAL_ADDRESS


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Start or join Ray. Returns a dict describing what we connected to."""
    import ray

    global _LOCAL_ADDRESS
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return {"address": "existing", "embedded": False}
    kwargs: dict[str, Any] = {
        "log_to_driver": True,
        "configure_logging": True,
        "logging_level": "WARNING" if quiet else "INFO",
    }
    if quiet:
        kwargs["logging_config"] = ray.LoggingConfig(encoding="TEXT", log_level="WARNING")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if address:
        ray.init(address=address, **kwargs)
        return {"address": address, "embedded": False}
    # Embedded local Ray on a GCS port we choose, so that Ray's own processes (Train's
    # controller uses the state API) can be told which cluster is theirs through RAY_ADDRESS:
    # with several Ray instances on one machine, "auto" discovery refuses to pick one.
    port = _free_port()
    own = f"127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    os.environ["RAY_ADDRESS"] = own  # inherited by the processes ray.init starts
    try:
        # The dashboard process serves Ray's state API; bind it to loopback only.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True,
                 dashboard_host="127.0.0.1", **kwargs)
    finally:
        for k, v in saved.items():  # our own child processes (orch run ...) start clean
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _LOCAL_ADDRESS = own
    return {"address": own, "embedded": True}


def shutdown(info: dict | None) -> None:
    import ray

    global _LOCAL_ADDRESS
    if info and info.get("embedded") and ray.is_initialized():
        try:
            ray.shutdown()
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: Ray is going anyway
            pass
        _LOCAL_ADDRESS = None


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    info = connect(address, num_cpus)
    try:
        yield info
    finally:
        shutdown(info)


def check_fits(num_workers: int, per_worker: dict[str, float], autoscaling: bool = False) -> None:
    """Fail fast when the connected cluster can never hold the request (no autoscaler)."""
    import ray

    total = ray.cluster_resources()
    if autoscaling:
        return
    problems = []
    for res, amount in per_worker.items():
        need = amount * num_workers
        have = total.get(res, 0.0)
        # A worker cannot be split across nodes: check the largest node too.
        if need > have:
            problems.append(f"{res}: {need:g} needed ({num_workers} workers x {amount:g}), cluster has {have:g}")
    if problems:
        raise InsufficientResourcesError(
            "the request can never be scheduled on this cluster: "
            + "; ".join(problems)
            + ". Lower resources.workers / cpus_per_worker / gpus_per_worker, or use a bigger cluster."
        )
