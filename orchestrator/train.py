"""Launch a RunPlan through Ray Train's TorchTrainer, with progress, ledger rows and a summary.

    orch run jobs/mnist_mlp.yaml                 # embedded local Ray
    orch run jobs/mnist_mlp.yaml --fresh         # a new run name (name__timestamp)

Ray's own objects carry the spec: ScalingConfig (workers, CPUs/GPUs per worker), RunConfig
(name, storage_path), CheckpointConfig (num_to_keep), FailureConfig (max_failures) and
a torch process-group config (gloo on CPU, nccl on GPU; orchestrator/trainer.py). Ray Train
v2 gives the Result only the metrics of the last report that carried a checkpoint, so per-step
metrics reach the run directory through a UserCallback (it runs in the Train controller) that appends `metrics.jsonl`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from orchestrator import ledger
from orchestrator.ledger import JobStatus, RunInProgressError, RunState  # noqa: F401
from orchestrator.plan import RunPlan
from orchestrator.spec import dump_yaml, import_workload

METRICS_FILE = "metrics.jsonl"


def _callback_class():
    from ray.train import UserCallback

    class MetricsToRunDir(UserCallback):
        """Appends rank 0's reports to run_dir/metrics.jsonl; a step reported again after a
        restart replaces the history from that step on, so no step appears twice."""

        def __init__(self, run_dir: str):
            self.run_dir = run_dir
            self.last_step: int | None = None

        def after_report(self, run_context, metrics, checkpoint):
            if not metrics:
                return
            row = dict(metrics[0])
            row["time"] = time.time()
            if checkpoint is not None:
                row["checkpoint"] = checkpoint.path
            path = Path(self.run_dir) / METRICS_FILE
            step = row.get("step")
            if step is not None and self.last_step is not None and step <= self.last_step:
                truncate_history(path, step)
            with open(path, "a") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
            self.last_step = step

    return MetricsToRunDir


def _is_local(path: str) -> bool:
    return "://" not in str(path)


def truncate_history(path: Path, from_step: int) -> None:
    """Drop metric rows at or after `from_step` (they are about to be recomputed)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line).get("step", -1) < from_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Tail(threading.Thread):
    """Prints new metric rows as they land: step, loss, accuracy, samples/s."""

    def __init__(self, path: Path, console, every: float = 0.5):
        super().__init__(daemon=True)
        self.path, self.console, self.every = path, console, every
        self.stop_event = threading.Event()
        self.offset = path.stat().st_size if path.exists() else 0

    def run(self):
        while not self.stop_event.is_set():
            self.poll()
            self.stop_event.wait(self.every)
        self.poll()

    def poll(self):
        if not self.path.exists():
            return
        with open(self.path) as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            # only whole lines
            end = chunk.rfind("\n") + 1
            self.offset += len(chunk[:end].encode())
        for line in chunk[:end].splitlines():
            try:
                self.console.print(format_progress(json.loads(line)))
            except json.JSONDecodeError:
                pass


def format_progress(row: dict[str, Any]) -> str:
    parts = [f"step {row.get('step', '?'):>6}"]
    for key, fmt in (("epoch", "{:d}"), ("loss", "{:.4f}"), ("accuracy", "{:.4f}"),
                     ("samples_per_s", "{:,.0f}"), ("step_time_s", "{:.4f}")):
        if key in row and row[key] is not None:
            try:
                val = fmt.format(int(row[key]) if fmt == "{:d}" else row[key])
            except (ValueError, TypeError):
                val = str(row[key])
            label = {"samples_per_s": "samples/s", "step_time_s": "s/step"}.get(key, key)
            parts.append(f"{label} {val}")
    if row.get("checkpoint"):
        parts.append(f"[saved {Path(row['checkpoint']).name}]")
    return "  ".join(parts)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while getattr(seen, "__cause__", None) is not None:
        seen = seen.__cause__
    text = f"{type(seen).__name__}: {seen}"
    return text.strip()[:2000]


def _worker_config(plan: RunPlan) -> dict[str, Any]:
    from orchestrator import faults

    cfg = plan.worker_config()
    injected = faults.from_env(plan.run_name)  # ORCH_FAULTS: reliability tests and game days only
    if injected:
        cfg["faults"] = injected
    return cfg


def _final(result, run_dir: Path) -> tuple[dict[str, Any], str]:
    """Final metrics and checkpoint: Ray's Result when there is one, else the last logged row."""
    metrics = dict(result.metrics or {}) if result is not None else {}
    checkpoint = result.checkpoint.path if (result is not None and result.checkpoint) else ""
    if not metrics:
        history = read_metrics(run_dir)
        last = history[-1] if history else {}
        metrics = {k: v for k, v in last.items() if k not in ("time", "checkpoint")}
    return metrics, checkpoint


def launch(plan: RunPlan, console=None, address: str | None = None, sweep_id: str = "") -> dict[str, Any]:
    """Run the plan on Ray Train; returns a summary dict with status and final metrics."""
    from rich.console import Console

    console = console or Console()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from orchestrator import runtime

    spec = plan.spec
    mod = import_workload(spec.workload)
    worker_config = _worker_config(plan)  # a bad ORCH_FAULTS fails here, before anything starts
    run_dir = Path(plan.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.resolved.yaml").write_text(dump_yaml(spec))
    (run_dir / "plan.yaml").write_text(plan.to_yaml())
    resumed_step = None
    if plan.resumes_from:
        state_file = Path(plan.resumes_from) / "state.json"
        if state_file.exists():
            resumed_step = json.loads(state_file.read_text()).get("step")
            if resumed_step is not None:
                truncate_history(run_dir / METRICS_FILE, int(resumed_step) + 1)

    closed = ledger.claim_run_name(plan.storage_path, plan.run_name)
    if closed:
        console.print(f"[yellow]closed {len(closed)} run row(s) of '{plan.run_name}' whose driver "
                      f"had died: {', '.join(closed)}[/yellow]")
    run_id = f"{plan.run_name}-{uuid.uuid4().hex[:8]}"
    state = RunState()
    common = dict(run_id=run_id, run_name=plan.run_name, workload=spec.workload,
                  spec_hash=spec.spec_hash(), run_dir=str(run_dir), sweep_id=sweep_id)
    started = time.time()
    ledger.record(plan.storage_path, status=JobStatus.PENDING,
                  start_time=started, extra={"resumes_from": plan.resumes_from or "",
                                             "driver_pid": os.getpid()}, **common)

    info = runtime.connect(address)
    from orchestrator import tracking  # TensorBoard/MLflow from metrics.jsonl (tracking.py)

    tracker = tracking.start(plan, run_id=run_id, sweep_id=sweep_id, console=console)
    tail = None
    result = None
    error = ""
    try:
        runtime.check_fits(plan.num_workers, plan.resources_per_worker,
                           cluster_yaml=plan.cluster_config)
        runtime.require_shared_storage(  # runs spanning nodes: s3/gs/NFS
            plan.storage_path, plan.resources_per_worker, plan.num_workers)
        # A workload may stream Ray Datasets to its workers (get_dataset_shard); see
        # jobs/resnet_images.py: ray_datasets(spec) -> {name: Dataset} | None.
        datasets = mod.ray_datasets(spec) if hasattr(mod, "ray_datasets") else None
        data_kwargs = {"datasets": datasets} if datasets else {}
        if datasets and hasattr(mod, "ray_data_config"):
            data_kwargs["dataset_config"] = mod.ray_data_config(spec)
        from orchestrator.trainer import torch_trainer

        trainer = torch_trainer(
            mod.train_loop,
            # In its own embedded Ray the driver outlives the controller (orchestrator/trainer.py).
            keep_cleaner=not runtime.embedded(address),
            train_loop_config=worker_config,
            **data_kwargs,
            backend=plan.backend,
            scaling_config=ScalingConfig(
                num_workers=plan.num_workers,
                use_gpu=plan.use_gpu,
                resources_per_worker=plan.resources_per_worker,
            ),
            run_config=RunConfig(
                name=plan.run_name,
                storage_path=plan.storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
                failure_config=FailureConfig(max_failures=spec.failure.max_failures),
                # Local run dirs get metrics.jsonl from rank 0 directly (see Session.log).
                callbacks=[] if _is_local(plan.run_dir) else [_callback_class()(str(run_dir))],
            ),
        )
        state.to(JobStatus.RUNNING)
        ledger.record(plan.storage_path, status=JobStatus.RUNNING, start_time=started,
                      extra={"driver_pid": os.getpid()}, **common)
        where = "resuming from " + Path(plan.resumes_from).name if plan.resumes_from else "fresh run"
        console.print(
            f"[bold]orch run[/bold] {plan.run_name}: {spec.workload}, {plan.num_workers} worker(s), "
            f"{plan.strategy}/{plan.precision}, {where}; run dir {run_dir}", soft_wrap=True
        )
        tail = _Tail(run_dir / METRICS_FILE, console)
        tail.start()
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        state.to(JobStatus.SUCCEEDED)
    except KeyboardInterrupt as exc:
        state.to(JobStatus.STOPPED)
        error = ("stopped (SIGTERM)" if isinstance(exc, runtime.Terminated)
                 else "interrupted (Ctrl-C)")
    except Exception as exc:  # noqa: BLE001 - every failure ends as a FAILED row with its cause
        state.to(JobStatus.FAILED)
        error = _root_cause(exc)
    finally:
        if tail is not None:
            tail.stop_event.set()
        if not state.status.terminal:  # e.g. SystemExit: still leave a terminal row
            state.to(JobStatus.STOPPED)
            error = error or "driver exited"
        # The terminal row is written before Ray is shut down, which can be slow or be
        # interrupted by a second Ctrl-C.
        metrics, checkpoint = _final(result, run_dir)
        ended = time.time()
        ledger.record(plan.storage_path, status=state.status, start_time=started, end_time=ended,
                      metrics=metrics, latest_checkpoint=checkpoint, error=error, **common)
        if tail is not None:
            tail.join(timeout=5)
        runtime.shutdown(info)

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
    if spec.compress and state.status == JobStatus.SUCCEEDED:  # the spec's `compress:` section
        from orchestrator.compress import run_after_training
        summary["compress"] = run_after_training(spec, summary, console=console)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    tracking.finish(tracker, summary)
    return summary
