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


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Start or join Ray. Returns a dict describing what we connected to."""
    import ray

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
    # Our own workers import `jobs` and `orchestrator` from the installed venv; keep Ray quiet.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, **kwargs)
        return {"address": address, "embedded": False}
    # The dashboard process serves Ray's state API (used to check for leaked actors); bind
    # it to loopback only.
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
    return {"address": "embedded", "embedded": True}


def shutdown(info: dict | None) -> None:
    import ray

    if info and info.get("embedded") and ray.is_initialized():
        ray.shutdown()


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
