"""The function every Ray Train worker runs: it imports the run's workload and calls its
train_loop(config).

Ray pickles the function it hands each worker by reference to its module. A workload from your
own project (`workload: mypkg.mytrain`, `workload: train/my_job.py`) is importable only once
its folder is on the worker's sys.path, which Ray does not know: this function, importable
wherever orchestrator is installed, puts `WorkerConfig.workload_path` there first (a path
relative to the worker's cwd on a cluster, where each node unpacks the same --working-dir).
"""

from __future__ import annotations

from typing import Any


def train_loop(config: dict[str, Any]) -> Any:
    import os
    import time

    # When this worker's train function began: the run's start-up breakdown (the summary's
    # "startup", orch run's table) splits Ray's worker start from the workload's own set-up.
    os.environ["ORCH_T_ENTRY"] = repr(time.time())
    quiet_train_reports()
    from orchestrator import workloads

    mod = workloads.import_workload(config["workload"], config.get("workload_path"))
    return mod.train_loop(config)


# Ray Train logs every report and every checkpoint of every rank at INFO
# ("Reporting training result 5: TrainingReport(...)", "Checkpoint successfully created at:
# ..."), which log_to_driver forwards into orch run's output between its own progress lines,
# and those already say "[saved checkpoint_N]". Warnings and errors still come through.
_CHATTY = (
    "ray.train.v2._internal.execution.context",
    "ray.train.v2._internal.execution.storage",
)


def quiet_train_reports() -> None:
    """In a Train worker (where Train has imported these modules; nothing is imported here).
    context.py names its logger after its file, not its module."""
    import logging
    import sys

    for name in _CHATTY:
        mod = sys.modules.get(name)
        for logger_name in (name, getattr(mod, "__file__", None)):
            if logger_name:
                logging.getLogger(logger_name).setLevel(logging.WARNING)
