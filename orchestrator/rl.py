"""Launch reinforcement-learning jobs (workloads with `KIND = "rllib"`) on RLlib.

    orch run jobs/cartpole_dqn.yaml                       # train; rerun the same command to resume
    orch run jobs/cartpole_dqn.yaml train.stop_return=200 resources.workers=2
    orch rollout runs/cartpole-dqn --episodes 20          # greedy episodes, latest checkpoint
    orch rollout runs/cartpole-dqn/checkpoint_000040 --episodes 5 --json

`orch run` dispatches here when the workload's KIND is "rllib". The RLlib Algorithm is built
in the driver process (it holds the Learner and the replay buffer); `resources.workers` maps
onto EnvRunners:

    resources.workers: 1  ->  num_env_runners=0: the driver samples too (cheapest on few cores)
    resources.workers: N  ->  N remote EnvRunner actors, resources.cpus_per_worker CPUs each
    resources.gpus_per_worker > 0  ->  the (local) Learner's GPUs (num_gpus_per_learner)
    failure.max_failures  ->  EnvRunner restarts (restart_failed_env_runners)

The run directory `<storage_path>/<run_name>/` gets spec.resolved.yaml, plan.yaml,
metrics.jsonl (one row per training iteration; `step` is the lifetime env-step count),
RLlib's own checkpoints as checkpoint_NNNNNN/ (NNNNNN = training iteration), summary.json and
learning_curve.png. `checkpoint.every_steps` counts env steps for these jobs. Rerunning the
same command restores the latest checkpoint (weights, optimizer, env-step counters, epsilon
schedule, replay buffer) and continues from its env-step count.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from orchestrator import ledger
from orchestrator.errors import CheckpointError, FieldError, SpecError
from orchestrator.ledger import JobStatus, RunState
from orchestrator.plan import RunPlan
from orchestrator.spec import dump_yaml, import_workload

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"


def env_runner_resources(plan: RunPlan) -> dict[str, Any]:
    """How the spec's resources map onto RLlib (see the module docstring)."""
    res = plan.spec.resources
    remote = 0 if res.workers <= 1 else res.workers
    return {
        "num_env_runners": remote,
        "cpus_per_env_runner": res.cpus_per_worker,
        "gpus_per_learner": res.gpus_per_worker,
        "max_failures": plan.spec.failure.max_failures,
    }


def check_plan(plan: RunPlan) -> None:
    """Spec choices that mean nothing for an RLlib job are errors, not silent no-ops."""
    spec = plan.spec
    errors = []
    if spec.precision != "fp32":
        errors.append(
            FieldError("precision", "RLlib jobs train in fp32; expected fp32", spec.precision)
        )
    if spec.strategy in ("deepspeed", "fsdp"):
        errors.append(
            FieldError(
                "strategy",
                "RLlib jobs use one local Learner; expected ddp or auto (ignored)",
                spec.strategy,
            )
        )
    if "://" in plan.run_dir:
        errors.append(
            FieldError(
                "storage_path",
                "RLlib checkpoints are written by the driver; expected a local or mounted path",
                spec.storage_path,
            )
        )
    if errors:
        raise SpecError(errors)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """Drop rows past the checkpoint being resumed (they are about to be sampled again)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    keep = [r for r in read_metrics(run_dir) if r.get("step", 0) <= after_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(path)


def format_progress(row: dict[str, Any]) -> str:
    ret = row.get("episode_return_mean")
    parts = [
        f"iter {row.get('iteration', 0):>4}",
        f"env steps {row.get('env_steps', 0):>8,}",
        f"mean return {'-' if ret is None else f'{ret:6.1f}':>6}",
    ]
    if row.get("episode_return_max") is not None:
        parts.append(f"max {row['episode_return_max']:4.0f}")
    parts.append(f"eps {row.get('epsilon', 0):.3f}")
    if row.get("env_steps_per_s"):
        parts.append(f"{row['env_steps_per_s']:,.0f} steps/s")
    if row.get("checkpoint"):
        parts.append(f"[saved {Path(row['checkpoint']).name}]")
    return "  ".join(parts)


def plot_learning_curve(
    run_dir: str | Path,
    target: float | None = None,
    eval_point: tuple[float, float, float] | None = None,
) -> Path | None:
    """learning_curve.png: mean return against env steps (and the greedy evaluation, if any)."""
    rows = [r for r in read_metrics(run_dir) if r.get("episode_return_mean") is not None]
    if not rows:
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
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(run_dir) / CURVE_FILE
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while getattr(seen, "__cause__", None) is not None:
        seen = seen.__cause__
    return f"{type(seen).__name__}: {seen}".strip()[:2000]


def launch(
    plan: RunPlan, console=None, address: str | None = None, sweep_id: str = ""
) -> dict[str, Any]:
    """Run an RLlib plan; returns the same summary dict as orchestrator.train.launch."""
    from rich.console import Console

    from orchestrator import runtime

    console = console or Console()
    check_plan(plan)
    spec = plan.spec
    mod = import_workload(spec.workload)
    run_dir = Path(plan.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.resolved.yaml").write_text(dump_yaml(spec))
    (run_dir / "plan.yaml").write_text(plan.to_yaml())
    resumed_step = None
    if plan.resumes_from:
        resumed_step = mod.read_state(plan.resumes_from).get("env_steps")
        if resumed_step is None:
            raise CheckpointError(
                f"{plan.resumes_from}: no state.json; not a checkpoint of "
                "this job (start over with --fresh)"
            )
        truncate_metrics(run_dir, int(resumed_step))

    mapping = env_runner_resources(plan)
    closed = ledger.claim_run_name(plan.storage_path, plan.run_name)
    if closed:
        console.print(
            f"[yellow]closed {len(closed)} run row(s) of '{plan.run_name}' whose "
            f"driver had died: {', '.join(closed)}[/yellow]"
        )
    run_id = f"{plan.run_name}-{uuid.uuid4().hex[:8]}"
    state = RunState()
    common = dict(
        run_id=run_id,
        run_name=plan.run_name,
        workload=spec.workload,
        spec_hash=spec.spec_hash(),
        run_dir=str(run_dir),
        sweep_id=sweep_id,
    )
    extra = {
        "resumes_from": plan.resumes_from or "",
        "algorithm": "DQN",
        "num_env_runners": mapping["num_env_runners"],
        "driver_pid": os.getpid(),
    }
    started = time.time()
    ledger.record(
        plan.storage_path, status=JobStatus.PENDING, start_time=started, extra=extra, **common
    )

    tracker = _start_tracking(plan, run_id, sweep_id, console)
    info = None
    final: dict[str, Any] = {}
    error = ""
    try:
        info = runtime.connect(address)
        if mapping["num_env_runners"]:
            per_runner = {"CPU": mapping["cpus_per_env_runner"]}
            runtime.check_fits(
                mapping["num_env_runners"],
                per_runner,
                cluster_yaml=getattr(plan, "cluster_config", None),
            )
        state.to(JobStatus.RUNNING)
        ledger.record(
            plan.storage_path, status=JobStatus.RUNNING, start_time=started, extra=extra, **common
        )
        where = (
            f"resuming from {Path(plan.resumes_from).name} at {resumed_step:,} env steps"
            if plan.resumes_from
            else "fresh run"
        )
        runners = mapping["num_env_runners"]
        console.print(
            f"[bold]orch run[/bold] {plan.run_name}: {spec.workload} (RLlib DQN, "
            f"{'sampling in the driver' if not runners else f'{runners} EnvRunner actor(s)'}), "
            f"{where}; run dir {run_dir}",
            highlight=False,
        )
        config = plan.worker_config()
        config.update(mapping, resume_from=plan.resumes_from)
        final = mod.train_loop(
            config, on_iteration=lambda row: console.print(format_progress(row), highlight=False)
        )
        if final.get("stop_reason"):
            console.print(f"stopped: {final['stop_reason']}", highlight=False)
        if final.get("eval_episodes"):
            console.print(
                f"greedy evaluation: mean return {final['eval_return_mean']:.1f} ± "
                f"{final['eval_return_std']:.1f} over {final['eval_episodes']} episodes",
                highlight=False,
            )
        state.to(JobStatus.SUCCEEDED)
    except KeyboardInterrupt:
        state.to(JobStatus.STOPPED)
        error = "interrupted (Ctrl-C); rerun the same command to resume"
    except Exception as exc:  # noqa: BLE001 - every failure ends as a FAILED row with its cause
        state.to(JobStatus.FAILED)
        error = _root_cause(exc)
    finally:
        if not state.status.terminal:  # e.g. SystemExit: still leave a terminal row
            state.to(JobStatus.STOPPED)
            error = error or "driver exited"
        metrics, checkpoint = _final(final, run_dir)
        ended = time.time()
        # The terminal row goes before Ray's shutdown, which can be slow or interrupted.
        ledger.record(
            plan.storage_path,
            status=state.status,
            start_time=started,
            end_time=ended,
            metrics=metrics,
            latest_checkpoint=checkpoint,
            error=error,
            extra=extra,
            **common,
        )
        if info is not None:
            runtime.shutdown(info)

    try:
        eval_point = None
        if metrics.get("eval_episodes"):
            eval_point = (
                metrics.get("env_steps", 0),
                metrics["eval_return_mean"],
                metrics["eval_return_std"],
            )
        curve = plot_learning_curve(run_dir, spec.train.get("stop_return"), eval_point)
        if curve is not None:
            console.print(f"learning curve: {curve}", highlight=False)
    except Exception as exc:  # noqa: BLE001 - a missing plot never fails the run
        console.print(f"[yellow]could not plot the learning curve: {exc}[/yellow]")
    summary = {
        "run_id": run_id,
        "run_name": plan.run_name,
        "status": state.status.value,
        "metrics": metrics,
        "checkpoint": checkpoint,
        "run_dir": str(run_dir),
        "wall_time_s": ended - started,
        "resumed_from_step": resumed_step,
        "error": error,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if tracker is not None:
        from orchestrator import tracking

        tracking.finish(tracker, summary)
    return summary


def _start_tracking(plan: RunPlan, run_id: str, sweep_id: str, console):
    """TensorBoard/MLflow fed from metrics.jsonl (orchestrator.tracking), when available."""
    try:
        from orchestrator import tracking
    except ImportError:
        return None
    return tracking.start(plan, run_id=run_id, sweep_id=sweep_id, console=console)


def _final(final: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], str]:
    """Final metrics (the loop's, else the last metrics row) and the newest checkpoint."""
    final = dict(final)
    if not final:
        history = read_metrics(run_dir)
        final = {k: v for k, v in (history[-1] if history else {}).items() if k != "time"}
    checkpoint = final.pop("checkpoint", "") or ""
    if not checkpoint:
        done = sorted(c for c in run_dir.glob("checkpoint_*") if (c / "_COMPLETE").exists())
        checkpoint = str(done[-1]) if done else ""
    metrics = {
        k: v
        for k, v in final.items()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    }
    return metrics, checkpoint


# --- orch rollout ------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its newest complete checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    if (p / "_COMPLETE").exists() or (p / "rllib_checkpoint.json").exists():
        return p
    done = sorted(c for c in p.glob("checkpoint_*") if (c / "_COMPLETE").exists())
    if not done:
        raise CheckpointError(
            f"{p}: not a checkpoint (no _COMPLETE or rllib_checkpoint.json) and holds no "
            "complete checkpoint_NNNNNN/ directory"
        )
    return done[-1]


def rollout(
    checkpoint: str | Path, episodes: int, seed: int = 0, env: str | None = None
) -> dict[str, Any]:
    """Greedy episodes with a trained policy; no Ray cluster needed."""
    ck = resolve_checkpoint(checkpoint)
    state = {}
    state_file = ck / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
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

    saved = checkpoint.parent / "spec.resolved.yaml"
    if saved.exists():
        name = (yaml.safe_load(saved.read_text()) or {}).get("workload")
        if name and getattr(import_workload(name), "KIND", "") == "rllib":
            return name
    return "cartpole_dqn"
