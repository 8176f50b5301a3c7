"""Greedy episodes of a trained RLlib policy, from a checkpoint alone (no Ray cluster).

orch rollout runs/cartpole-dqn --episodes 20          # the run's newest complete checkpoint
orch rollout runs/cartpole-dqn/checkpoint_000040 --episodes 5 --json
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.errors import CheckpointError
from orchestrator.spec import import_workload

RLLIB_MARKER = "rllib_checkpoint.json"  # a checkpoint RLlib wrote itself (no _COMPLETE)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory (ours, or RLlib's own), or a run directory's newest complete
    checkpoint."""
    if not rundir.is_uri(path):
        p = Path(path)
        if (p / RLLIB_MARKER).exists() and not (p / rundir.COMPLETE_MARKER).exists():
            return p
    return rundir.resolve_checkpoint(path)  # a checkpoint in a bucket is downloaded


def rollout(
    checkpoint: str | Path, episodes: int, seed: int = 0, env: str | None = None
) -> dict[str, Any]:
    """Run `episodes` greedy episodes (argmax Q); their returns, mean, std, min and max."""
    ck = resolve_checkpoint(checkpoint)
    state = rundir.read_state(ck)
    env_id = env or state.get("env")
    if not env_id:
        raise CheckpointError(f"{ck}: no state.json naming the env; pass --env")
    dqn = import_workload(_workload_of(ck))
    try:
        module = dqn.load_module(ck)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    returns = dqn.greedy_returns(module, env_id, episodes, seed=seed)
    mean = sum(returns) / len(returns)
    std = (
        math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
        if len(returns) > 1
        else 0.0
    )
    return {
        "checkpoint": str(ck),
        "env": env_id,
        "env_steps": state.get("env_steps"),
        "episodes": len(returns),
        "returns": returns,
        "mean": mean,
        "std": std,
        "min": min(returns),
        "max": max(returns),
    }


def _workload_of(checkpoint: Path) -> str:
    """The workload that wrote a checkpoint (its run's spec.resolved.yaml), default cartpole_dqn."""
    import yaml

    saved = rundir.run_spec_of(checkpoint)
    if saved.exists():
        name = (yaml.safe_load(saved.read_text()) or {}).get("workload")
        if name and getattr(import_workload(name), "KIND", "") == "rllib":
            return name
    return "cartpole_dqn"
