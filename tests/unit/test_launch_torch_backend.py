"""orch's TorchTrainer pieces (orchestrator/launch/ray_train.py,
orchestrator/launch/torch_backend.py): what the Train controller unpickles must not import torch,
and the helper actors are dropped only where the module says. No Ray is started here."""

from __future__ import annotations

import pickle
import subprocess
import sys

from orchestrator.launch.ray_train import _drop
from orchestrator.launch.torch_backend import TorchProcessGroupConfig


def test_controller_side_objects_unpickle_without_torch():
    from ray.train.torch import TorchConfig
    from ray.train.v2._internal.callbacks.accelerators import AcceleratorSetupCallback
    from ray.train.v2._internal.callbacks.backend_setup import BackendSetupCallback
    from ray.train.v2.api.config import ScalingConfig

    cfg = TorchProcessGroupConfig(backend="gloo")
    ours = pickle.dumps(
        [
            cfg,
            BackendSetupCallback(cfg),
            AcceleratorSetupCallback(cfg, ScalingConfig(num_workers=2)),
        ]
    )
    # ... whereas Ray's own TorchConfig brings torch in (what the module saves); unpickled
    # second in the same fresh process, so the first answer cannot have been a fluke.
    theirs = pickle.dumps(
        [TorchConfig(backend="gloo"), BackendSetupCallback(TorchConfig(backend="gloo"))]
    )
    code = (
        "import pickle, sys; blobs = pickle.loads(sys.stdin.buffer.read()); "
        "objs = pickle.loads(blobs[0]); "
        "print(type(objs[1]._backend).__module__, objs[0].to_dict()['backend'], "
        "'torch' in sys.modules); "
        "pickle.loads(blobs[1]); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps([ours, theirs]),
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().split() == [
        "orchestrator.launch.torch_backend",
        "gloo",
        "False",
        "True",
    ]


def test_same_fields_and_framework_as_ray_torch_config():
    from ray.train.torch import TorchConfig

    ours, theirs = TorchProcessGroupConfig(backend="nccl"), TorchConfig(backend="nccl")
    assert ours.to_dict() == theirs.to_dict()
    assert ours.framework == theirs.framework
    assert ours.backend_cls.share_cuda_visible_devices is True


def test_cleaner_and_dataset_manager_dropped_only_where_asked():
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )

    cleaner = PlacementGroupCleanerCallback()
    datasets = object.__new__(DatasetsCallback)  # its __init__ wants a run context
    other = object()
    cbs = [cleaner, datasets, other]
    assert _drop(cbs, keep_cleaner=False, keep_datasets=False) == [other]
    assert _drop(cbs, keep_cleaner=True, keep_datasets=False) == [cleaner, other]
    assert _drop(cbs, keep_cleaner=False, keep_datasets=True) == [datasets, other]
    assert _drop(cbs, keep_cleaner=True, keep_datasets=True) == cbs
