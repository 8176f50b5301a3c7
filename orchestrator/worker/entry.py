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
    from orchestrator import workloads

    mod = workloads.import_workload(config["workload"], config.get("workload_path"))
    return mod.train_loop(config)
