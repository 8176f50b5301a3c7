"""`orch run` of a reinforcement-learning workload (`KIND = "rllib"`) on RLlib.

    orch run jobs/cartpole_dqn.yaml                       # train; rerun the same command to resume
    orch run jobs/cartpole_dqn.yaml train.stop_return=200 resources.workers=2

The RLlib Algorithm is built in the driver process (it holds the Learner and the replay
buffer) by the workload's own train_loop; the plan maps resources onto EnvRunners
(orchestrator.plan.env_runners):

    resources.workers: 1  ->  num_env_runners=0: the driver samples too (cheapest on few cores)
    resources.workers: N  ->  N remote EnvRunner actors, resources.cpus_per_worker CPUs each
    resources.gpus_per_worker > 0  ->  the (local) Learner's GPUs (num_gpus_per_learner)
    failure.max_failures  ->  EnvRunner restarts (restart_failed_env_runners)

The run directory gets spec.resolved.yaml, plan.yaml, metrics.jsonl (one row per training
iteration; `step` is the lifetime env-step count), RLlib's own checkpoints as
checkpoint_NNNNNN/ (NNNNNN = training iteration), summary.json and learning_curve.png.
`checkpoint.every_steps` counts env steps for these jobs. Rerunning the same command restores
the latest checkpoint (weights, optimizer, env-step counters, epsilon schedule, replay buffer)
and continues from its env-step count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.plan import RunPlan

CURVE_FILE = "learning_curve.png"


def describe(plan: RunPlan) -> dict[str, Any]:
    """The RLlib settings the run's AlgorithmConfig gets, by AlgorithmConfig's own names."""
    r = plan.env_runners
    assert r is not None
    return {
        "AlgorithmConfig": {
            "env_runners": {
                "num_env_runners": r.num_env_runners,
                "num_cpus_per_env_runner": r.cpus_per_env_runner,
            },
            "learners": {"num_gpus_per_learner": r.gpus_per_learner},
            "fault_tolerance": {
                "restart_failed_env_runners": True,
                "max_num_env_runner_restarts": r.max_failures,
            },
        },
        "built_by": f"jobs.{plan.workload}.train_loop (in the driver)",
    }


def run(life) -> tuple[dict[str, Any], str]:
    """The workload's train_loop in this process, inside a RunLifecycle
    (orchestrator/launch/lifecycle.py)."""
    from orchestrator import runtime
    from orchestrator.spec import import_workload

    plan = life.plan
    mod = import_workload(plan.workload)
    runners = plan.env_runners
    assert runners is not None
    if runners.num_env_runners and plan.cluster_config is None:
        runtime.check_fits(runners.num_env_runners, {"CPU": runners.cpus_per_env_runner})
    where = (
        f"resuming from {Path(plan.resumes_from).name} at {plan.resumes_from_step:,} env steps"
        if plan.resumes_from
        else "fresh run"
    )
    how = (
        "sampling in the driver"
        if not runners.num_env_runners
        else f"{runners.num_env_runners} EnvRunner actor(s)"
    )
    life.running(
        f"[bold]orch run[/bold] {plan.run_name}: {plan.workload} (RLlib DQN, {how}), "
        f"{where}; run dir {plan.run_dir}"
    )
    out = mod.train_loop(plan.worker.to_dict())
    life.result = out
    if out.get("stop_reason"):
        life.console.print(f"stopped: {out['stop_reason']}", highlight=False)
    if out.get("eval_episodes"):
        life.console.print(
            f"greedy evaluation: mean return {out['eval_return_mean']:.1f} ± "
            f"{out['eval_return_std']:.1f} over {out['eval_episodes']} episodes",
            highlight=False,
        )
    return final(life)


def final(life) -> tuple[dict[str, Any], str]:
    """Final metrics (the loop's, else the last metrics row) and the newest checkpoint."""
    out = dict(life.result or {})
    if not out:
        history = rundir.read_metrics(life.plan.run_dir)
        out = {k: v for k, v in (history[-1] if history else {}).items() if k != "time"}
    checkpoint = out.pop("checkpoint", "") or ""
    if not checkpoint:
        newest = rundir.latest_complete(life.plan.run_dir)
        checkpoint = str(newest) if newest else ""
    return out, checkpoint


def after(life, summary: dict[str, Any]) -> None:
    """learning_curve.png (a missing plot never fails the run)."""
    metrics = summary["metrics"]
    try:
        eval_point = None
        if metrics.get("eval_episodes"):
            eval_point = (
                metrics.get("env_steps", 0),
                metrics["eval_return_mean"],
                metrics["eval_return_std"],
            )
        train = life.plan.worker.train or {}
        target = train.get("stop_greedy_return") or train.get("stop_return")
        curve = plot_learning_curve(life.plan.run_dir, target, eval_point)
        if curve is not None:
            life.console.print(f"learning curve: {curve}", highlight=False)
    except Exception as exc:  # noqa: BLE001
        life.console.print(f"[yellow]could not plot the learning curve: {exc}[/yellow]")


def plot_learning_curve(
    run_dir: str | Path,
    target: float | None = None,
    eval_point: tuple[float, float, float] | None = None,
) -> str | None:
    """learning_curve.png: mean return against env steps, the greedy evaluations during
    training (if any; a screened-out one at its screen's mean, hollow), and the greedy
    evaluation after it."""
    every = rundir.read_metrics(run_dir)
    rows = [r for r in every if r.get("episode_return_mean") is not None]
    greedy = [r for r in every if r.get("greedy_return_mean") is not None]
    if not rows and not greedy:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [r["env_steps"] for r in rows],
        [r["episode_return_mean"] for r in rows],
        label="mean return (training episodes)",
    )
    if greedy:
        n = max(r.get("greedy_episodes") or 0 for r in greedy)
        whole = [r for r in greedy if r.get("greedy_episodes") == n]
        screened = [r for r in greedy if r.get("greedy_episodes") != n]
        ax.plot(
            [r["env_steps"] for r in whole],
            [r["greedy_return_mean"] for r in whole],
            "D",
            color="C2",
            markersize=6,
            zorder=4,
            label=f"greedy mean ({n} episodes)",
        )
        if screened:
            ax.plot(
                [r["env_steps"] for r in screened],
                [r["greedy_return_mean"] for r in screened],
                "o",
                color="C2",
                markerfacecolor="none",
                markersize=4,
                label="greedy mean (screened out at 10)",
            )
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    if eval_point is not None:
        x, m, s = eval_point
        ax.errorbar(
            [x],
            [m],
            yerr=[s],
            fmt="o",
            color="C3",
            capsize=4,
            label=f"greedy eval {m:.0f} ± {s:.0f}",
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(rundir.basename(run_dir))
    ax.grid(alpha=0.3)
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top * 1.35)  # room for the legend above the curves
    ax.legend(loc="upper left", ncol=2, fontsize="small")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return rundir.write_bytes(rundir.join(run_dir, CURVE_FILE), buf.getvalue())
