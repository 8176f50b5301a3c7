"""Connecting to Ray: an embedded local Ray by default, a cluster when an address is given.

orch run SPEC                                  # embedded single-node Ray, stopped at exit
orch up; orch run SPEC                         # joins the local head `orch up` started
orch run SPEC --address auto                   # a running local head (ray start --head)
RAY_ADDRESS=ray://HEAD:10001 orch run SPEC     # a cluster
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator.errors import ExitCode, InsufficientResourcesError, OrchestratorError
from orchestrator.host import free_port  # also runtime.free_port for its callers
from orchestrator.rundir import is_uri
from orchestrator.trainenv import (  # noqa: F401 - also runtime.<name> for their callers
    TRAIN_POLL_ENV,
    TRAIN_POLL_S,
    default_train_polling,
    local_train_env,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt by stop_on_sigterm()."""


# The run dir of the run this driver trains now, whose workers save a checkpoint before a
# SIGTERM stops it (orchestrator/worker/stop.py); None: SIGTERM stops at once.
_CHECKPOINT_ON_STOP: dict[str, Any] = {
    "run_dir": None,
    "stopping": False,
    "installed": False,
    "sigterm": False,
}


def got_sigterm() -> bool:
    """Was this process sent SIGTERM (the interrupt it raised may reach the caller as a plain
    KeyboardInterrupt, re-raised by Ray's ray.get)?"""
    return bool(_CHECKPOINT_ON_STOP["sigterm"])


def checkpoint_on_stop(run_dir: str | None) -> None:
    """From now on (until None), the first SIGTERM asks `run_dir`'s workers for a checkpoint
    and waits for it before it stops the run."""
    _CHECKPOINT_ON_STOP.update(run_dir=run_dir, stopping=False)


def stop_on_sigterm() -> None:
    """SIGTERM (`orch stop` / `ray job stop`, the queue preempting, orch scheduler's
    concurrency: replace, a job manager) ends a run or sweep like Ctrl-C: the row says
    STOPPED, Tune saves its state, rerunning or --resume continues. A run first has its
    workers save a checkpoint (checkpoint_on_stop), so the rerun loses no step; a second
    SIGTERM stops at once. Only the main thread can install a signal handler; elsewhere this
    does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    _CHECKPOINT_ON_STOP["installed"] = True  # connect() puts it back after ray.init

    def _term(signum, frame):
        run_dir = _CHECKPOINT_ON_STOP["run_dir"]
        _CHECKPOINT_ON_STOP["sigterm"] = True  # Ray may turn the interrupt into a plain one
        if run_dir and not _CHECKPOINT_ON_STOP["stopping"]:
            _CHECKPOINT_ON_STOP["stopping"] = True  # a second SIGTERM: straight to the raise
            _checkpoint_then_stop(run_dir)
        raise Terminated

    signal.signal(signal.SIGTERM, _term)


def _checkpoint_then_stop(run_dir: str) -> None:
    import time

    from orchestrator.worker import stop

    try:
        if not stop.request(run_dir):
            return
    except Exception as exc:  # noqa: BLE001 - stopping matters more than the checkpoint
        print(f"[orch] SIGTERM: could not ask the workers for a checkpoint ({exc})", flush=True)
        return
    print(
        "[orch] SIGTERM: the workers save a checkpoint, then the run stops "
        "(SIGTERM again: stop now)",
        flush=True,
    )
    deadline = time.monotonic() + stop.WAIT_S
    while time.monotonic() < deadline:
        step = stop.confirmed(run_dir)
        if step is not None:
            print(f"[orch] checkpoint at step {step} saved; stopping", flush=True)
            return
        time.sleep(0.2)
    print(f"[orch] no checkpoint within {stop.WAIT_S:.0f} s; stopping without one", flush=True)


_LOCAL_ADDRESS: str | None = None
_POOLABLE = False  # see poolable()


def poolable() -> bool:
    """Is this driver on an embedded Ray, whose processes already have what Train propagates?
    Then Train's controller and workers can run in its prestarted processes
    (orchestrator/launch/pooled.py). Not `orch up`'s head: it prestarts processes only when it
    starts, and Ray binds a worker process to one job (one driver); tried on the head, it made
    no clear difference."""
    import ray

    return _POOLABLE and ray.is_initialized()


# An embedded Ray starts without its dashboard unless asked: the dashboard process and its
# module subprocesses cost seconds of a 2-core machine at every `orch run` (bench/cold_start.py),
# and nothing in an embedded run reads them (Train's state actor treats a missing state API as
# "unknown" and goes on). `orch run --dashboard` / `orch sweep --dashboard`, or ORCH_DASHBOARD=1,
# starts it, on 127.0.0.1. A cluster's head keeps its own dashboard (the Jobs API lives there).
DASHBOARD_ENV = "ORCH_DASHBOARD"


def want_dashboard() -> bool:
    return os.environ.get(DASHBOARD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def local_address() -> str | None:
    """GCS address of the embedded Ray this process started, if any."""
    return _LOCAL_ADDRESS


def embedded(address: str | None = None) -> bool:
    """Whether connect(address) leaves this process on a local Ray it started itself (one that
    lives exactly as long as this process), as opposed to a cluster or head it joined."""
    import ray

    if ray.is_initialized():
        return _LOCAL_ADDRESS is not None
    if address or os.environ.get("RAY_ADDRESS"):
        return False
    from orchestrator import localhead

    return localhead.find() is None


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Start or join Ray. Returns a dict describing what we connected to."""
    import ray

    global _LOCAL_ADDRESS, _POOLABLE
    default_train_polling()
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
        _own_sigterm_again()
        return {"address": address, "embedded": False}
    from orchestrator import localhead

    head = localhead.find()
    if head is not None:  # `orch up` is up: join it rather than start a Ray of our own
        os.environ.update(localhead.client_env(head))
        os.environ["RAY_ADDRESS"] = head["address"]  # Ray's own processes find it too
        # Ray read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (in client_env) when it was imported:
        # without its effect this driver turns 127.0.0.1 into the machine's routable address,
        # where the loopback-only head does not listen.
        import ray._private.ray_constants as ray_constants
        from ray._raylet import Config

        ray_constants.ENABLE_RAY_CLUSTER = False
        Config.initialize("")  # RAY_AUTH_MODE=token too, as Ray's own token set-up does
        print(
            f"[orch] joining the local head at {head['address']} (orch up; orch down stops it)",
            flush=True,
        )
        ray.init(address=head["address"], **kwargs)
        _own_sigterm_again()
        return {"address": head["address"], "embedded": False, "local_head": True}
    local_train_env()
    # Embedded local Ray on a GCS port we choose, so that Ray's own processes (Train's
    # controller uses the state API) can be told which cluster is theirs through RAY_ADDRESS:
    # with several Ray instances on one machine, "auto" discovery refuses to pick one.
    port = free_port()
    own = f"127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    os.environ["RAY_ADDRESS"] = own  # inherited by the processes ray.init starts
    try:
        dashboard = want_dashboard()
        if dashboard:  # loopback only
            kwargs["dashboard_host"] = "127.0.0.1"
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, **kwargs)
        if dashboard and getattr(ctx, "dashboard_url", None):
            print(f"[orch] Ray dashboard: http://{ctx.dashboard_url}", flush=True)
    finally:
        for k, v in saved.items():  # our own child processes (orch run ...) start clean
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _LOCAL_ADDRESS = own
    _POOLABLE = True  # its processes have Train's variables (launch/pooled.py)
    _own_sigterm_again()
    return {"address": own, "embedded": True}


def _own_sigterm_again() -> None:
    """ray.init replaces the SIGTERM handler with its own `sys.exit(15)`, which skipped the
    STOPPED row's summary and the checkpoint on stop; orch's goes back where it was set."""
    if _CHECKPOINT_ON_STOP["installed"]:
        stop_on_sigterm()


def shutdown(info: dict | None) -> list[str]:
    """Stop the Ray `connect` started (an embedded one only; a joined cluster is left alone)
    and end what it left. Returns the names of the processes that had to be ended."""
    import ray

    global _LOCAL_ADDRESS, _POOLABLE
    if not (info and info.get("embedded") and ray.is_initialized()):
        return []
    ours = _descendants()
    try:
        ray.shutdown()
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: Ray is going anyway
        pass
    _LOCAL_ADDRESS = None
    _POOLABLE = False
    return end_leftovers(ours)


def _descendants() -> list:
    """Every process this one started, directly or not (an embedded Ray's raylet, GCS, agents
    and workers), as psutil handles; [] without psutil."""
    try:
        import psutil

        return psutil.Process().children(recursive=True)
    except Exception:  # noqa: BLE001 - best effort
        return []


def end_leftovers(procs: list, grace_s: float = 1.0) -> list[str]:
    """After an embedded Ray's shutdown, end what it left: Ray's DashboardAgent and
    RuntimeEnvAgent were seen living on for a minute after their raylet, in `orch run`'s
    process group. Waits `grace_s` for them to exit by themselves, then SIGTERM, then
    SIGKILL. Only processes this process started (collected before the shutdown) are
    touched. Returns the names of those it had to end."""
    if not procs:
        return []
    from orchestrator import host

    return host.end(procs, grace_s)


def _fits_per_node(node: dict[str, float], need: dict[str, float]) -> int:
    """How many worker bundles `need` one node of resources `node` can hold."""
    counts = []
    for res, amount in need.items():
        if amount <= 0:
            continue
        counts.append(int(node.get(res, 0.0) // amount + 1e-9))
    return min(counts) if counts else 10**9


def capacity(
    need: dict[str, float],
    nodes: list[dict[str, float]],
    pools: list[tuple[str, dict[str, float], int]] | None = None,
) -> int:
    """Most workers of `need` that live nodes plus autoscaling pools could ever hold.

    pools: (name, resources per node, max nodes). Over-counts rather than under-counts, so a
    refusal is certain; a request that passes may still wait for nodes.
    """
    total = sum(_fits_per_node(n, need) for n in nodes)
    for _name, res, max_count in pools or []:
        total += _fits_per_node(res, need) * max(0, int(max_count))
    return total


def cluster_pools(cluster_yaml: str | None = None) -> list[tuple[str, dict[str, float], int]]:
    """Autoscaling pools: from a cluster YAML when given, else from the connected cluster's
    autoscaler config (empty for a cluster without an autoscaler, like embedded Ray)."""
    if cluster_yaml:
        from orchestrator.cluster.config import node_types

        return [
            (nt.name, nt.resources, int(nt.max_workers or 0) + (1 if nt.is_head else 0))
            for nt in node_types(cluster_yaml).values()
        ]
    try:
        from ray._private.state import state

        cfg = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler state: treat as fixed-size
        return []
    if cfg is None:
        return []
    return [
        (g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count))
        for g in cfg.node_group_configs
    ]


def check_fits(
    num_workers: int,
    per_worker: dict[str, float],
    cluster_yaml: str | None = None,
    nodes: list[dict[str, float]] | None = None,
) -> None:
    """Fail fast, naming the request, when the cluster can never hold it.

    A worker cannot be split across nodes, so each bundle must fit one node (or one node
    type of the autoscaler); then the count must fit what the cluster can grow to.
    """
    if nodes is None:
        import ray

        nodes = [
            {k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")
        ]
    pools = cluster_pools(cluster_yaml)
    can = capacity(per_worker, nodes, pools)
    if can >= num_workers:
        return
    want = ", ".join(f"{k}={v:g}" for k, v in per_worker.items())
    biggest = {}
    for n in nodes + [p[1] for p in pools]:
        for k in per_worker:
            biggest[k] = max(biggest.get(k, 0.0), n.get(k, 0.0))
    have = ", ".join(f"{k}={v:g}" for k, v in biggest.items())
    source = (
        f"node types in {cluster_yaml}"
        if cluster_yaml
        else ("its autoscaler's node types" if pools else "its nodes (no autoscaler)")
    )
    raise InsufficientResourcesError(
        f"the request can never be scheduled: {num_workers} worker(s) x {{{want}}}, "
        "but the cluster "
        f"can hold at most {can} such worker(s), judging by {source}; the largest node offers "
        f"{{{have}}}. Lower resources.workers / cpus_per_worker / gpus_per_worker, or add a "
        f"node type that fits."
    )


# -- storage that every node of a run reaches ------------------------------------------------


class SharedStorageError(OrchestratorError):
    """A run that spans nodes was given a storage_path that only one node can see."""

    exit_code = ExitCode.BAD_INPUT


SHARED_FSTYPES = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "lustre",
    "gpfs",
    "beegfs",
    "glusterfs",
    "cephfs",
    "ceph",
    "fuse.gcsfuse",
    "fuse.s3fs",
    "fuse.mountpoint-s3",
    "efs",
    "9p",
    "virtiofs",
    "fuse.juicefs",
    "wekafs",
}


def _fstype(path: str) -> str:
    """Filesystem type of the mount holding `path` (longest matching mount point)."""
    try:
        import psutil

        p = os.path.realpath(path)
        best, fstype = "", ""
        for part in psutil.disk_partitions(all=True):
            mp = part.mountpoint
            if (p == mp or p.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best, fstype = mp, part.fstype
        return fstype
    except Exception:  # noqa: BLE001 - no psutil / no /proc: treat as local
        return ""


def shared_storage_problem(
    storage_path: str, alive_nodes: int, needs_new_nodes: bool = False, fstype: str | None = None
) -> str | None:
    """Why `storage_path` cannot hold a run that spans nodes, or None when it can."""
    if is_uri(storage_path):
        scheme = str(storage_path).split("://", 1)[0]
        if scheme in ("file", "local"):
            pass
        else:
            return None  # s3://, gs://, abfs://, hdfs://, ... : every node reaches it
    if alive_nodes <= 1 and not needs_new_nodes:
        return None
    if os.environ.get("ORCH_SHARED_STORAGE") == "1":
        return None
    fstype = _fstype(str(storage_path).split("://", 1)[-1]) if fstype is None else fstype
    if fstype in SHARED_FSTYPES or fstype.startswith("fuse."):
        return None
    why = (
        f"the cluster has {alive_nodes} nodes"
        if alive_nodes > 1
        else "this run needs nodes the cluster has yet to add"
    )
    return (
        f"storage_path {storage_path!r} is a local directory ({fstype or 'local disk'}), "
        f"but {why}: "
        "checkpoints written on one node are invisible to the others, so resuming and the "
        "final result break. Use shared storage that every node mounts or reaches: "
        "storage_path=s3://BUCKET/runs, gs://BUCKET/runs, or an NFS path mounted on every "
        "node (set ORCH_SHARED_STORAGE=1 if yours is shared but not detected)."
    )


def require_shared_storage(
    storage_path: str, per_worker: dict[str, float] | None = None, num_workers: int = 1
) -> None:
    """Call after connecting to Ray: refuse a local storage_path when the run may span nodes
    (more than one alive node, or a request no current node can hold, so the autoscaler must
    add one). Raises SharedStorageError."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    needs_new = False
    if per_worker:

        def fits(n):
            have = n.get("Resources") or {}
            return all(have.get(k, 0) >= v for k, v in per_worker.items() if v)

        needs_new = not any(fits(n) for n in nodes)
    problem = shared_storage_problem(storage_path, len(nodes), needs_new)
    if problem:
        raise SharedStorageError(problem)
