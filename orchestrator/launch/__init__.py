"""Launching a RunPlan on Ray: one run lifecycle, a launcher per kind of workload.

    summary = launch(plan(spec))          # what `orch run` does; returns the summary dict
    describe(plan(spec))                  # the Ray objects it would build (`orch plan`)

    lifecycle.py    the life every run shares: run dir, ledger rows, tracking, summary
    ray_train.py    Ray Train: ScalingConfig, RunConfig, ... from the plan; the TorchTrainer
    torch_backend.py  process groups without torch in the Train controller
    rllib.py        RLlib workloads: the Algorithm in the driver, EnvRunners from the plan
    progress.py     progress from metrics.jsonl: a bar on a terminal, one line per row elsewhere

Nothing is imported at package import: Ray Train's controller unpickles
`orchestrator.launch.torch_backend`, and importing this package must cost it nothing.
"""

from __future__ import annotations

from typing import Any


def describe(plan) -> dict[str, Any]:
    """The Ray objects (or RLlib settings) a launch of `plan` builds, as plain data."""
    if plan.kind == "rllib":
        from orchestrator.launch import rllib

        return rllib.describe(plan)
    from orchestrator.launch import ray_train

    return ray_train.describe(plan)


def launch(plan, console=None, address: str | None = None, sweep_id: str = "") -> dict[str, Any]:
    """Run `plan` on Ray (an embedded local Ray unless `address` or RAY_ADDRESS names one);
    returns the summary: run_id, run_name, status, metrics, checkpoint, run_dir, wall time,
    resumed_from_step, error."""
    from rich import get_console

    from orchestrator.launch import progress
    from orchestrator.launch.lifecycle import RunLifecycle

    console = console or get_console()
    if plan.kind == "rllib":
        from orchestrator.launch import rllib

        runners = plan.env_runners
        life = RunLifecycle(
            plan,
            console=console,
            address=address,
            sweep_id=sweep_id,
            line=progress.rllib_format(plan),
            ray=rllib.describe(plan),
            extra={"algorithm": "DQN", "num_env_runners": runners.num_env_runners},
        )
        return life.execute(rllib.run, rllib.final, rllib.after)

    from orchestrator.launch import ray_train

    life = RunLifecycle(
        plan,
        console=console,
        address=address,
        sweep_id=sweep_id,
        line=progress.train_line,
        ray=ray_train.describe(plan),
    )
    return life.execute(ray_train.run, ray_train.final, _compress_after_training)


def _compress_after_training(life, summary: dict[str, Any]) -> None:
    """The spec's `compress:` section, after a successful run."""
    if life.plan.compress and summary["status"] == "SUCCEEDED":
        from orchestrator.compress.pipeline import run_after_training

        summary["compress"] = run_after_training(
            life.plan.compress, life.plan.workload, summary, console=life.console
        )
