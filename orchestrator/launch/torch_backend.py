"""Ray Train's torch process-group set-up, without importing torch in the Train controller.

Ray's `TorchConfig` and its `_TorchBackend` live in `ray.train.torch.config`, which imports torch
at the top. The controller unpickles both (they are inside the callbacks the trainer hands it),
so every launch's controller imported torch before it did anything else: ~2 CPU-s and ~2 s of
wall time at the head of each launch here, for a process that never touches a tensor.

`TorchProcessGroupConfig` is the same configuration (backend, init_method, timeout_s) and
`_Backend` the same steps as Ray's for gloo and nccl: the master address from worker 0,
MASTER_ADDR/MASTER_PORT on every worker, the torchrun-style environment, then
`init_process_group` on each rank, and `destroy_process_group` at the end. The steps that touch
torch are Ray's own functions, imported inside the workers, which import torch anyway. Any other
backend (hccl, tpu_dist) is handed to Ray's `_TorchBackend` unchanged.
`bench/launch_overhead.py` measures the difference.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig

logger = logging.getLogger(__name__)

_OWN_BACKENDS = ("gloo", "nccl")


# --- run inside the Train workers (torch is imported there anyway) ------------------------------


def _set_master(addr: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)


def _set_distributed_env() -> None:
    from ray.train.torch.config import _set_torch_distributed_env_vars

    _set_torch_distributed_env_vars()


def _init_process_group(**kwargs: Any) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(**kwargs)


def _shutdown(destroy_process_group: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


class _TorchFuncContext:
    """Ray's TorchConfigContextManager (sets the CUDA device), imported in the worker."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


# --- run in the Train controller ----------------------------------------------------------------


class _Backend(Backend):
    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group, backend_config: TorchProcessGroupConfig) -> None:
        backend = backend_config.backend or (
            "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        )
        if backend not in _OWN_BACKENDS:
            from ray.train.torch.config import _TorchBackend

            return _TorchBackend().on_start(worker_group, backend_config)
        from ray.train._internal.utils import get_address_and_port

        addr, port = worker_group.execute_single(0, get_address_and_port)
        if backend_config.init_method == "env":
            worker_group.execute(_set_master, addr=addr, port=port)
            url = "env://"
        elif backend_config.init_method == "tcp":
            from ray._common.network_utils import build_address

            url = f"tcp://{build_address(addr, port)}"
        else:
            raise ValueError(
                f"init_method must be 'env' or 'tcp', not {backend_config.init_method!r}"
            )
        worker_group.execute(_set_distributed_env)
        ray.get(
            [
                worker_group.execute_single_async(
                    i,
                    _init_process_group,
                    backend=backend,
                    world_rank=i,
                    world_size=len(worker_group),
                    init_method=url,
                    timeout_s=backend_config.timeout_s,
                )
                for i in range(len(worker_group))
            ]
        )

    def on_shutdown(self, worker_group, backend_config) -> None:
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import (
            DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
            TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
        )

        timeout = float(
            os.environ.get(
                TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
            )
        )
        futures = worker_group.execute_async(_shutdown, destroy_process_group=len(worker_group) > 1)
        try:
            ray.get(futures, timeout=timeout)
        except GetTimeoutError:
            logger.warning("torch process group shutdown timed out after %s s", timeout)


@dataclass
class TorchProcessGroupConfig(BackendConfig):
    """Drop-in for ray.train.torch.TorchConfig (same fields) as TorchTrainer's torch_config."""

    backend: str | None = None
    init_method: str = "env"
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return _Backend

    @property
    def train_func_context(self):
        return _TorchFuncContext

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "init_method": self.init_method,
            "timeout_s": self.timeout_s,
        }
