"""Ray Train's controller and workers in the raylet's prestarted processes (embedded Ray).

An embedded Ray's raylet prestarts one Python worker process per CPU while `ray.init` returns
(`--num_prestart_python_workers`), for the default runtime env. Ray Train gives its controller
actor, and its worker actors, a runtime env of their own, `{"env_vars": ...}` (the variables it
propagates from the driver, and the controller's RAY_WARN_BLOCKING_GET_INSIDE_ASYNC=0). Another
runtime env means other processes: each of those actors waited for a fresh Python process to
start and import Ray (about 2 s each on 2 cores; bench/cold_start.py's "workers" phase).

In an embedded Ray those variables are already in every process: the raylet was started by
this driver, from its environment, after orch set them. So here the controller is created with
no runtime env of its own, and in its process the worker group gives its workers only the
user's `worker_runtime_env` (empty by default): both land in the prestarted processes.

Only for an embedded Ray (runtime.poolable()); ORCH_POOLED_WORKERS=0 turns it off. A cluster's
raylets were started elsewhere, from another environment, so there Train's propagation stays;
`orch up`'s head prestarts its processes once, for its first job only.
"""

from __future__ import annotations

import os
import threading

from ray.train.v2._internal.execution.controller import TrainController

ENV = "ORCH_POOLED_WORKERS"


def wanted() -> bool:
    from orchestrator import runtime

    return runtime.poolable() and os.environ.get(ENV, "1") != "0"


class PooledTrainController(TrainController):
    """Train's controller, whose worker group asks for no runtime env beyond the user's."""

    def __init__(self, *args, **kwargs):
        from ray.train.v2._internal.execution.worker_group import worker_group

        def user_env_only(custom_runtime_env):
            return custom_runtime_env

        worker_group.WorkerGroup._get_worker_runtime_env = staticmethod(user_env_only)
        super().__init__(*args, **kwargs)


def run_controller(trainer, **controller_init_kwargs):
    """DataParallelTrainer._initialize_and_run_controller (Ray 2.60) without the controller's
    runtime env, and with PooledTrainController."""
    import ray

    # Train sets this for its (async) controller through the runtime env; here, through the
    # environment the raylet passes on (set before ray.init by runtime.connect).
    controller_cls = ray.remote(
        num_cpus=0,
        label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
    )(PooledTrainController)
    controller = controller_cls.remote(**controller_init_kwargs)
    if threading.current_thread() is threading.main_thread():
        trainer._register_sigint_handler(controller)
    ray.get(controller.run.remote())
    return ray.get(controller.get_result.remote())
