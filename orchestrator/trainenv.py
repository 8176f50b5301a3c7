"""The environment Ray Train reads: orch's defaults for it, and what Train would propagate from
a driver to its controller and workers. Set before a local Ray starts (embedded, or `orch up`'s
head), these are in every process of that Ray (orchestrator/launch/pooled.py relies on it).
"""

from __future__ import annotations

import os

# Ray Train v2's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's
# default 2 s), and a worker's ray.train.report (every checkpoint; every logged row in a sweep
# trial) waits for that poll: 8 checkpoints in 32 MNIST steps took 11.6 s at 2 s and 1.5 s at
# 0.25 s, and a finished or failed run was noticed up to 2 s late (bench/controller_poll.py).
# orch uses 0.25 s unless the variable is set; the poll is one small remote call per worker.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = 0.25


def default_train_polling() -> None:
    """Set orch's controller poll interval unless the user set one. Ray Train propagates the
    variable from the process that creates a TorchTrainer to its controller; an embedded Ray
    started after this inherits it everywhere (sweep trials included)."""
    os.environ.setdefault(TRAIN_POLL_ENV, str(TRAIN_POLL_S))


def local_train_env() -> None:
    """The variables a Ray on this machine (embedded, or `orch up`'s head) is started with,
    and that its every process then has."""
    default_train_polling()
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Nothing preempts the nodes of a local Ray: skip Train's PreemptionWatcher, one actor
    # process per worker-group start (~0.9 s of a short launch here; docs/benchmarks.md).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # What Train would hand its (async) controller in a runtime env, in every process instead
    # (orchestrator/launch/pooled.py: the controller then runs in a prestarted process).
    os.environ.setdefault("RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "0")
