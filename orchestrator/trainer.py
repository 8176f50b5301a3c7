"""The TorchTrainer that `orch run` and sweep trials fit: its process groups set up without
torch in the controller (orchestrator/torch_backend.py), and up to two helper actors fewer where
they have nothing to do.

Ray Train v2 starts, for every launch, besides its controller and workers:

- a detached `PlacementGroupCleaner`, which removes the run's placement group if the controller
  dies without doing it (a placement group lives as long as the Ray job that made it, not as
  long as the actor). `orch run` in an embedded local Ray leaves it out: the driver owns the
  controller and stops that Ray when fit() returns, however the controller ended. It stays on a
  cluster (`--address`, RAY_ADDRESS), and always in sweep trials: Tune stops a trial (ASHA, PBT,
  a failed trial) by killing its actor, which kills the trial's controller with it, while the
  sweep's driver, and its Ray, live on. (Without it, the placement groups of ASHA-stopped trials
  held the test session's CPUs, and the next run's workers never started.)
- a `DatasetManager`, which hands out Ray Data shards, even when the run has no Ray Datasets.
  Left out when there are none.

Each is a fresh Python process that imports Ray Train (1.4-1.9 CPU-s apiece here; about 22 CPU-s
a 2-worker MNIST launch in all), started while the workers start, on the same 2 cores. The
controller also waits for the cleaner twice: it registers the placement group with a blocking
call once the worker group is up, and stops it at the end. `bench/launch_overhead.py` measures
launches with and without all this.

The callbacks are dropped by type from Ray's own default list, so anything else Ray adds there
stays; if a Ray release renames them, nothing is dropped.
"""

from __future__ import annotations

from typing import Any


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


def torch_trainer(train_fn, *, backend: str, keep_cleaner: bool, **kwargs: Any):
    """A ray.train.torch.TorchTrainer for `train_fn` with `kwargs`: process groups over
    `backend` set up by orchestrator.torch_backend (no torch import in the controller); a
    PlacementGroupCleaner only if `keep_cleaner`, a DatasetManager only if `datasets` are given."""
    from ray.train.torch import TorchTrainer

    from orchestrator.torch_backend import TorchProcessGroupConfig

    kwargs["torch_config"] = TorchProcessGroupConfig(backend=backend)

    keep_datasets = bool(kwargs.get("datasets"))
    if keep_cleaner and keep_datasets:
        return TorchTrainer(train_fn, **kwargs)

    class OrchTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return _drop(super()._create_default_callbacks(), keep_cleaner, keep_datasets)

    return OrchTorchTrainer(train_fn, **kwargs)
