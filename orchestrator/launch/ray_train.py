"""Ray Train's objects from a RunPlan, and the `orch run` of a Ray Train workload.

    orch run jobs/mnist_mlp.yaml          # run(): fits the TorchTrainer that trainer() builds
    orch plan jobs/mnist_mlp.yaml         # describe(): the same objects, shown, not run

`ray_objects(plan)` is the one place the plan becomes Ray's own objects: ScalingConfig
(workers, CPUs/GPUs per worker), RunConfig (name, storage_path), CheckpointConfig
(num_to_keep), FailureConfig (max_failures) and the torch process-group config (gloo on CPU,
nccl on GPU). `orch run`, sweep trials (orchestrator/sweep/trial.py) and `orch plan` all use it.

The TorchTrainer is orch's own in two ways (`bench/launch_overhead.py` measures both):

- its process groups are set up without torch in the Train controller
  (orchestrator/launch/torch_backend.py);
- up to two of Ray Train v2's helper actors are left out where they have nothing to do. A
  detached `PlacementGroupCleaner` removes the run's placement group if the controller dies
  without doing it (a placement group lives as long as the Ray job that made it). `orch run`
  in an embedded local Ray leaves it out: the driver owns the controller and stops that Ray
  when fit() returns, however the controller ended. It stays on a cluster (`--address`,
  RAY_ADDRESS), and always in sweep trials: Tune stops a trial (ASHA, PBT, a failed trial) by
  killing its actor, which kills the trial's controller with it, while the sweep's driver, and
  its Ray, live on. (Without it, the placement groups of ASHA-stopped trials held the test
  session's CPUs, and the next run's workers never started.) A `DatasetManager`, which hands
  out Ray Data shards, is left out when the run has no Ray Datasets. Each is a fresh Python
  process that imports Ray Train (1.4-1.9 CPU-s apiece here), started while the workers start;
  the controller also waits for the cleaner twice. They are dropped by type from Ray's own
  default list, so anything else Ray adds there stays; if a Ray release renames them, nothing
  is dropped.

Ray Train v2 gives the Result only the metrics of the last report that carried a checkpoint,
so per-step metrics reach the run directory another way: rank 0 writes them itself
(worker/session.py; a local run dir gets metrics.jsonl, a bucket gets chunks every few
seconds), off Ray Train's report barrier.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from orchestrator import rundir
from orchestrator.plan import RunPlan

# -- Ray's objects ---------------------------------------------------------------------------


def ray_objects(plan: RunPlan, callbacks: list | None = None) -> dict[str, Any]:
    """The Ray objects a run of `plan` is built from, by their Ray names."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from orchestrator.launch.torch_backend import TorchProcessGroupConfig

    # A sweep trial keeps one checkpoint more than asked: Train deletes checkpoint N-1 when it
    # registers N+1, which needs the trial's one-slot queue to have taken N, which the trial
    # takes only after it has handed N-1 to Tune (a copy): so no checkpoint is deleted
    # mid-copy (orchestrator/sweep/trial.py).
    keep = plan.checkpoint_keep + (1 if plan.trial else 0)
    checkpoint = CheckpointConfig(num_to_keep=keep)
    failure = FailureConfig(max_failures=plan.max_failures)
    return {
        "ScalingConfig": ScalingConfig(
            num_workers=plan.num_workers,
            use_gpu=plan.use_gpu,
            resources_per_worker=plan.resources_per_worker,
        ),
        "RunConfig": RunConfig(
            name=plan.run_name,
            storage_path=plan.storage_path,
            checkpoint_config=checkpoint,
            failure_config=failure,
            callbacks=list(callbacks or []),
        ),
        "CheckpointConfig": checkpoint,
        "FailureConfig": failure,
        "TorchConfig": TorchProcessGroupConfig(backend=plan.backend),
    }


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# What the builder sets, shown even where it equals Ray's default.
_ALWAYS = ("num_workers", "use_gpu", "name", "storage_path", "num_to_keep", "max_failures")


def _shown(value: Any) -> Any:
    """Ray's config objects as plain data: the fields set to other than Ray's defaults."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shown = {
            f.name: _shown(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if (f.name in _ALWAYS or getattr(value, f.name) not in (_default(f), "DEPRECATED"))
            and f.name not in ("checkpoint_config", "failure_config")  # shown on their own
        }
        return {k: v for k, v in shown.items() if v not in ({}, [])}  # filled in by Ray
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return type(value).__name__


def describe(plan: RunPlan) -> dict[str, Any]:
    """The Ray objects of `plan`, as plain data (the fields that differ from Ray's defaults),
    with the callbacks and helper actors a launch adds."""
    objs = ray_objects(plan)
    out = {name: _shown(obj) for name, obj in objs.items()}
    from orchestrator import workloads

    found = workloads.resolve(plan.workload)
    out["TorchTrainer"] = {
        "train_loop": f"orchestrator.worker.entry.train_loop -> {found.module_name}.train_loop",
        "workload": found.origin,
        "train_loop_config": "the plan's worker config (WorkerConfig)",
        "PlacementGroupCleaner": "kept on a cluster and in sweep trials; not in an embedded Ray",
    }
    return out


# -- the TorchTrainer ------------------------------------------------------------------------


def _drop(callbacks: list, keep_cleaner: bool, keep_datasets: bool) -> list:
    drop: list[type] = []
    try:
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )

        if not keep_cleaner:
            drop.append(PlacementGroupCleanerCallback)
    except ImportError:
        pass
    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

        if not keep_datasets:
            drop.append(DatasetsCallback)
    except ImportError:
        pass
    return [c for c in callbacks if not (drop and isinstance(c, tuple(drop)))]


def trainer(
    plan: RunPlan,
    train_fn,
    *,
    keep_cleaner: bool,
    callbacks: list | None = None,
    datasets: dict | None = None,
    dataset_config=None,
    config: dict | None = None,
):
    """The TorchTrainer of `plan`: ray_objects(plan), the worker config as train_loop_config,
    a PlacementGroupCleaner only if `keep_cleaner`, a DatasetManager only with `datasets`."""
    # TorchTrainer is a DataParallelTrainer whose backend config is a TorchConfig; orch's
    # backend config stands in for that (torch_backend.py), so the trainer is built from
    # DataParallelTrainer itself: `ray.train.torch` imports torch (~1.4 s in the driver, on
    # the way to the first step; bench/cold_start.py), and the driver never needs it.
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    objs = ray_objects(plan, callbacks)
    kwargs: dict[str, Any] = {
        "train_loop_config": config if config is not None else plan.worker.to_dict(),
        "scaling_config": objs["ScalingConfig"],
        "run_config": objs["RunConfig"],
        "backend_config": objs["TorchConfig"],
    }
    if datasets:
        kwargs["datasets"] = datasets
        if dataset_config is not None:
            kwargs["dataset_config"] = dataset_config
    from orchestrator.launch import pooled

    use_pool = pooled.wanted()

    class OrchTorchTrainer(DataParallelTrainer):
        def _create_default_callbacks(self):
            return _drop(super()._create_default_callbacks(), keep_cleaner, bool(datasets))

        def _initialize_and_run_controller(self, **controller_init_kwargs):
            if use_pool:  # an embedded Ray: the prestarted processes (launch/pooled.py)
                return pooled.run_controller(self, **controller_init_kwargs)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

    return OrchTorchTrainer(train_fn, **kwargs)


# -- orch run --------------------------------------------------------------------------------


def run(life) -> tuple[dict[str, Any], str]:
    """Fit the plan's TorchTrainer inside a RunLifecycle (orchestrator/launch/lifecycle.py);
    returns the final metrics and checkpoint (Ray's Result, else the last logged row)."""
    from orchestrator import runtime
    from orchestrator.spec import import_workload

    plan = life.plan
    mod = import_workload(plan.workload)
    if plan.cluster_config is None:  # else plan() checked it against the cluster YAML
        runtime.check_fits(plan.num_workers, plan.resources_per_worker)
    runtime.require_shared_storage(  # runs spanning nodes: s3/gs/NFS
        plan.storage_path, plan.resources_per_worker, plan.num_workers
    )
    # A workload may stream Ray Datasets to its workers (get_dataset_shard); see
    # jobs/resnet_images.py: ray_datasets(config, scaling) -> {name: Dataset} | None.
    objs = ray_objects(plan)
    config = plan.worker.to_dict()
    datasets = (
        mod.ray_datasets(config, objs["ScalingConfig"]) if hasattr(mod, "ray_datasets") else None
    )
    dataset_config = (
        mod.ray_data_config(config) if datasets and hasattr(mod, "ray_data_config") else None
    )
    from orchestrator.worker.entry import train_loop as worker_entry  # imports the workload

    fit = trainer(
        plan,
        worker_entry,
        # In its own embedded Ray the driver outlives the controller (module docstring).
        keep_cleaner=not runtime.embedded(life.address),
        datasets=datasets,
        dataset_config=dataset_config,
        config=config,
    )
    where = (
        f"resuming from {plan.resumes_from.rsplit('/', 1)[-1]}"
        if plan.resumes_from
        else "fresh run"
    )
    life.running(
        f"[bold]orch run[/bold] {plan.run_name}: {plan.workload}, "
        f"{plan.num_workers} worker(s), {plan.strategy}/{plan.precision}, {where}; "
        f"run dir {plan.run_dir}"
    )
    result = fit.fit()
    life.result = result
    if result.error is not None:
        raise result.error
    return final(life)


def final(life) -> tuple[dict[str, Any], str]:
    """Final metrics and checkpoint: Ray's Result when there is one, else the last row."""
    result, run_dir = life.result, life.plan.run_dir
    metrics = dict(result.metrics or {}) if result is not None else {}
    checkpoint = ""
    if result is not None and result.checkpoint:  # a path, or a URI on object storage
        checkpoint = rundir.uri_of(result.checkpoint.filesystem, result.checkpoint.path)
    if not metrics:
        history = rundir.read_metrics(run_dir)
        last = history[-1] if history else {}
        metrics = {k: v for k, v in last.items() if k not in ("time", "checkpoint")}
    if not checkpoint:  # stopped or failed: the newest complete one it leaves (the rerun's start)
        checkpoint = rundir.latest_complete(run_dir) or ""
    return metrics, checkpoint
