"""A checkpoint when a run is stopped (`orch stop`, `ray job stop`, the queue preempting it).

SIGTERM used to end `orch run` at once: the run resumed later from its last periodic
checkpoint and lost the steps since. Now the driver's first SIGTERM asks the workers for a
checkpoint first, through Ray's internal key-value store (the GCS), and waits for it:

    driver (runtime.stop_on_sigterm)          workers (Session.should_checkpoint)
    request(run_dir)  ----------------------> every POLL_STEPS steps rank 0 reads the key and
                                              every rank takes its answer (one all-reduce), so
                                              all of them save the same step
    wait for confirmed(run_dir) <------------ after that checkpoint, rank 0 confirm(run_dir, step),
    then stop as before                       and the workers wait to be ended

The driver waits at most WAIT_S (below the queue's 60 s before Ray's SIGKILL), then stops
anyway. A second SIGTERM stops at once. The driver asks only when rank 0 has said it listens
(`listen`, at its first should_checkpoint): a workload that never calls it (a torchrun script,
RLlib, a loop of your own) is stopped at once, as before.
"""

from __future__ import annotations

NAMESPACE = "orch"
POLL_STEPS = 10  # how often the workers look: one KV read (rank 0) and one all-reduce
WAIT_S = 40.0
# How long `orch stop` / `ray job stop` / the queue's preemption give a submitted job's driver
# after SIGTERM before Ray's SIGKILL (RAY_JOB_STOP_WAIT_TIME_S, set in the job's env by orch
# submit and the queue; Ray's default is 3 s): room for the checkpoint and the STOPPED row.
JOB_STOP_WAIT_S = 60


def _key(run_dir: str, what: str) -> bytes:
    return f"stop/{what}/{run_dir}".encode()


def _kv():
    from ray.experimental import internal_kv

    return internal_kv if internal_kv._internal_kv_initialized() else None


def listen(run_dir: str) -> None:
    """Rank 0 of a run whose loop calls should_checkpoint: it will answer a request."""
    kv = _kv()
    if kv is not None:
        kv._internal_kv_put(_key(run_dir, "listens"), b"1", overwrite=True, namespace=NAMESPACE)


def request(run_dir: str) -> bool:
    """Ask the run's workers for a checkpoint and a stop. False when nobody would answer (Ray
    not reachable, or a workload that does not listen)."""
    kv = _kv()
    if kv is None or not kv._internal_kv_exists(_key(run_dir, "listens"), namespace=NAMESPACE):
        return False
    kv._internal_kv_put(_key(run_dir, "request"), b"1", overwrite=True, namespace=NAMESPACE)
    return True


def requested(run_dir: str) -> bool:
    kv = _kv()
    return kv is not None and kv._internal_kv_exists(_key(run_dir, "request"), namespace=NAMESPACE)


def confirm(run_dir: str, step: int) -> None:
    kv = _kv()
    if kv is not None:
        kv._internal_kv_put(
            _key(run_dir, "done"), str(step).encode(), overwrite=True, namespace=NAMESPACE
        )


def confirmed(run_dir: str) -> int | None:
    """The step of the checkpoint the workers saved on request, or None (not yet)."""
    kv = _kv()
    if kv is None:
        return None
    got = kv._internal_kv_get(_key(run_dir, "done"), namespace=NAMESPACE)
    return None if got is None else int(got)


def clear(run_dir: str) -> None:
    """Forget the keys (a rerun of the same run dir starts with none)."""
    kv = _kv()
    if kv is not None:
        for what in ("request", "done", "listens"):
            kv._internal_kv_del(_key(run_dir, what), namespace=NAMESPACE)
