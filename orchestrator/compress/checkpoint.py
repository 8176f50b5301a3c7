"""Loading a trained checkpoint for compression: the model rebuilt through its workload.

    load_checkpoint("runs/mnist-mlp")                     # the run's newest complete checkpoint
    load_checkpoint("runs/x/checkpoint_000465", "mnist_mlp")

The checkpoint is found by orchestrator.rundir.resolve_checkpoint (a checkpoint directory,
which must be complete, or a run directory). The workload comes from --workload, the
checkpoint's config.json or the run's spec.resolved.yaml; the model is built untrained
(`compress_build(config, checkpoint_dir)` hook, a T5Config in state.json, or
build_model(Args[, num_classes])) and the weights of model.pt loaded into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.errors import CheckpointError


@dataclass
class Loaded:
    """A checkpoint rebuilt: the model (eval mode), its config, its workload's name and module,
    the checkpoint directory and its run directory."""

    model: Any
    config: dict[str, Any]
    workload: str
    module: Any
    checkpoint_dir: Path  # local (a checkpoint in a bucket is downloaded)
    run_dir: str  # the run it came from: a local path or a URI


def load_checkpoint(path: str | Path, workload: str | None = None) -> Loaded:
    """Rebuild the model through its workload (build_model(Args(config["train"]))) and load
    the checkpoint's weights."""
    import torch
    import yaml

    from orchestrator.spec import import_workload

    found = rundir.find_checkpoint(path)
    ckpt = rundir.resolve_checkpoint(found)
    run_dir = rundir.parent(found)
    config = rundir.read_json(ckpt, "config.json")
    spec_file = rundir.run_spec_of(ckpt)
    spec_data = yaml.safe_load(spec_file.read_text()) if spec_file.exists() else {}
    name = workload or config.get("workload") or (spec_data or {}).get("workload")
    if not name:
        raise CheckpointError(
            f"{ckpt}: cannot tell which workload made it (no 'workload' in config.json and no "
            f"{spec_file.name} beside it); pass --workload NAME"
        )
    if not config.get("train") and spec_data:
        config = {**config, "train": spec_data.get("train", {}), "data": spec_data.get("data", {})}
    try:
        mod = import_workload(name)
    except ModuleNotFoundError as exc:
        raise CheckpointError(f"{ckpt}: workload '{name}' not found ({exc})") from None
    state = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    model = _rebuild(mod, name, config, ckpt, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt}: weights do not fit workload '{name}' built from its "
            f"config: {str(exc).splitlines()[0]}"
        ) from None
    return Loaded(model.eval(), config, name, mod, ckpt, run_dir)


def _rebuild(mod, name: str, config: dict[str, Any], ckpt: Path, state: dict):
    """An untrained model of the checkpoint's shape. A workload's `compress_build(config,
    checkpoint_dir)` hook wins; T5 checkpoints record their T5Config in state.json; a
    build_model(args, num_classes) gets the out-features of the state's last 2-D weight."""
    import inspect

    hook = getattr(mod, "compress_build", None)
    if hook is not None:
        return hook(config, ckpt)
    saved = rundir.read_state(ckpt)
    if saved.get("t5_config") and hasattr(mod, "model_from_config"):
        return mod.model_from_config(saved["t5_config"])
    args_cls = getattr(mod, "Args", None)
    args = args_cls.model_validate(config.get("train", {})) if args_cls else config.get("train", {})
    if getattr(args, "weights", None):
        args = args.model_copy(update={"weights": None})  # the checkpoint has the weights
    params = list(inspect.signature(mod.build_model).parameters)
    if len(params) == 2 and params[1] == "num_classes":
        mats = [v for v in state.values() if getattr(v, "dim", lambda: 0)() == 2]
        if not mats:
            raise CheckpointError(f"{ckpt}: cannot tell num_classes for {name}.build_model")
        return mod.build_model(args, mats[-1].shape[0])
    if len(params) != 1:
        raise CheckpointError(
            f"{ckpt}: {name}.build_model{inspect.signature(mod.build_model)} "
            "needs more than Args; add compress_build(config, checkpoint_dir)"
        )
    return mod.build_model(args)
