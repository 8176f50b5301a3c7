"""One run's life, the same for every launcher (Ray Train, RLlib):

    run dir      spec.resolved.yaml and plan.yaml (with the Ray objects) written first
    resume       metrics.jsonl cut back to the checkpoint the run resumes from
    claim        rows of this run name whose driver died are closed; a live one refuses
    PENDING      a ledger row, then tracking (TensorBoard/MLflow) starts, then Ray connects
    RUNNING      when the launcher has built its Ray objects: a row, a banner, progress lines
    terminal     SUCCEEDED, FAILED (with the root cause) or STOPPED (Ctrl-C, SIGTERM), written
                 before Ray shuts down, which can be slow or be interrupted by a second Ctrl-C
    summary      summary.json, the launcher's extras (a learning curve, compression), tracking

A launcher supplies `body(life) -> (metrics, checkpoint)`, which builds its Ray objects, calls
`life.running(banner)` and trains, and `final(life) -> (metrics, checkpoint)` for a run that
did not return (failed or stopped).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from orchestrator import host, ledger, rundir, runtime
from orchestrator.ledger import JobStatus, RunState
from orchestrator.plan import RunPlan
from orchestrator.worker import stop


def root_cause(exc: BaseException) -> str:
    """The innermost cause of an exception chain, as `Type: message` (at most 2,000 chars)."""
    seen = exc
    while getattr(seen, "__cause__", None) is not None:
        seen = seen.__cause__
    return f"{type(seen).__name__}: {seen}".strip()[:2000]


def clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without missing values (None, NaN), as they go to the ledger and summary."""
    return {
        k: v
        for k, v in metrics.items()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    }


# The phases of a run's start, in order: (name, from stamp, to stamp).
STARTUP_PHASES = (
    ("orch", "process", "ray_start"),  # interpreter, imports, plan, run dir, ledger row
    ("ray", "ray_start", "ray_ready"),  # starting (embedded) or joining Ray
    ("workers", "ray_ready", "entry"),  # Train controller, placement, worker processes
    ("setup", "entry", "ready"),  # in the workers: imports, process group, model, data, restore
    ("first_step", "ready", "first_row"),  # the first logged step
)


def startup_breakdown(
    stamps: dict[str, float], workers: list[dict[str, Any]], first_row: float | None
) -> dict[str, float]:
    """Seconds per start-up phase (STARTUP_PHASES) and `to_first_step_s` in all, from the
    driver's stamps and the first attempt's workers' (the slowest worker decides each
    phase). Phases whose stamps are missing (an RLlib run, a joined run) are left out."""
    t = dict(stamps)
    entries = [w["t_entry"] for w in workers if isinstance(w.get("t_entry"), (int, float))]
    readies = [w["t_ready"] for w in workers if isinstance(w.get("t_ready"), (int, float))]
    if entries:
        t["entry"] = max(entries)
    if readies:
        t["ready"] = max(readies)
    if first_row is not None:
        t["first_row"] = first_row
    out = {
        f"{name}_s": round(t[b] - t[a], 3)
        for name, a, b in STARTUP_PHASES
        if isinstance(t.get(a), (int, float)) and isinstance(t.get(b), (int, float))
    }
    if out and isinstance(t.get("first_row"), (int, float)) and t.get("process"):
        out["to_first_step_s"] = round(t["first_row"] - t["process"], 3)
    return out


class RunLifecycle:
    def __init__(
        self,
        plan: RunPlan,
        *,
        console,
        address: str | None,
        sweep_id: str = "",
        line: Callable[[dict[str, Any]], str],
        ray: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.plan, self.console, self.address, self.sweep_id = plan, console, address, sweep_id
        self.line, self.ray = line, ray
        self.run_id = plan.run_id
        self.state = RunState()
        self.extra = {
            "resumes_from": plan.resumes_from or "",
            "driver_pid": os.getpid(),
            **(extra or {}),
        }
        self.result: Any = None  # the launcher's own (Ray's Result, the loop's final dict)
        self.stamps: dict[str, float] = {
            "process": host.process_start() or time.time()
        }  # start-up, epoch s
        self.tail = None
        self.info: dict | None = None

    # -- rows ----------------------------------------------------------------------------

    def _record(self, status: JobStatus, **kw) -> None:
        p = self.plan
        ledger.record(
            p.storage_path,
            run_id=self.run_id,
            run_name=p.run_name,
            workload=p.workload,
            spec_hash=p.spec_hash,
            run_dir=p.run_dir,
            sweep_id=self.sweep_id,
            status=status,
            start_time=self.started,
            extra=self.extra,
            **kw,
        )

    def running(self, banner: str) -> None:
        """The launcher built its Ray objects and starts training."""
        from orchestrator.launch.progress import Tail

        self.state.to(JobStatus.RUNNING)
        self._record(JobStatus.RUNNING)
        self.console.print(banner, soft_wrap=True)
        self.tail = Tail(self.plan.run_dir, self.console, self.line, run_id=self.run_id)
        self.tail.start()

    def attempts(self) -> dict[str, Any]:
        """What the workers recorded of each start of their group (worker/session.py): how
        many restarts, the step the last one resumed from, where the workers ran."""
        try:
            got = rundir.read_attempts(self.plan.run_dir, self.run_id)
        except rundir.StorageError:
            return {}
        if not got:
            return {}
        out: dict[str, Any] = {
            "attempts": len(got),
            "restarts": len(got) - 1,
            "workers": got[-1].get("workers", []),
        }
        if len(got) > 1 or got[-1].get("resumed_from_step") is not None:
            out["resumed_from_step"] = got[-1].get("resumed_from_step")
        first_row = self.tail.first_row_time if self.tail is not None else None
        startup = startup_breakdown(self.stamps, got[0].get("workers", []), first_row)
        if startup:
            out["startup"] = startup
        return out

    # -- the whole life ------------------------------------------------------------------

    def execute(
        self,
        body: Callable[[RunLifecycle], tuple[dict[str, Any], str]],
        final: Callable[[RunLifecycle], tuple[dict[str, Any], str]],
        after: Callable[[RunLifecycle, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        from orchestrator import tracking
        from orchestrator.spec import dump_yaml

        p = self.plan
        # A bucket that cannot be reached or written: one clear error (exit 2) before any
        # file, ledger row or Ray.
        rundir.check_storage(p.storage_path, write=True)
        rundir.write_text(p.run_dir, rundir.SPEC_FILE, dump_yaml(p.resolved_spec))
        rundir.write_text(p.run_dir, rundir.PLAN_FILE, p.to_yaml(ray=self.ray))
        if p.resumes_from_step is not None:
            rundir.truncate_metrics(p.run_dir, p.resumes_from_step)
        closed = ledger.claim_run_name(p.storage_path, p.run_name)
        if closed:
            self.console.print(
                f"[yellow]closed {len(closed)} run row(s) of '{p.run_name}' "
                f"whose driver had died: {', '.join(closed)}[/yellow]"
            )
        self.started = time.time()
        self._record(JobStatus.PENDING)
        tracker = tracking.start(
            p, run_id=self.run_id, sweep_id=self.sweep_id, console=self.console
        )
        metrics: dict[str, Any] = {}
        checkpoint, error = "", ""
        outcome = None
        try:
            self.stamps["ray_start"] = time.time()
            self.info = runtime.connect(self.address)
            self.stamps["ray_ready"] = time.time()
            # SIGTERM from here on: the workers checkpoint first (orchestrator/worker/stop.py);
            # a key left by an earlier stop of this run dir would stop this attempt at once.
            stop.clear(p.run_dir)
            runtime.checkpoint_on_stop(p.run_dir)
            outcome = body(self)
            self.state.to(JobStatus.SUCCEEDED)
        except KeyboardInterrupt as exc:
            self.state.to(JobStatus.STOPPED)
            how = (
                "stopped (SIGTERM)"
                if isinstance(exc, runtime.Terminated) or runtime.got_sigterm()
                else "interrupted (Ctrl-C)"
            )
            error = f"{how}; rerun the same command to resume"
        except Exception as exc:  # noqa: BLE001 - every failure ends as a FAILED row with its cause
            self.state.to(JobStatus.FAILED)
            error = root_cause(exc)
        finally:
            runtime.checkpoint_on_stop(None)
            if self.tail is not None:
                self.tail.stop_event.set()
            if not self.state.status.terminal:  # e.g. SystemExit: still leave a terminal row
                self.state.to(JobStatus.STOPPED)
                error = error or "driver exited"
            metrics, checkpoint = outcome if outcome is not None else final(self)
            metrics = clean_metrics(metrics)
            ended = time.time()
            if self.tail is not None:
                self.tail.join(timeout=5)  # its last poll: every row, the first one's time
            attempts = self.attempts()
            self.extra.update(attempts)
            self._record(
                self.state.status,
                end_time=ended,
                metrics=metrics,
                latest_checkpoint=checkpoint,
                error=error,
            )
            runtime.shutdown(self.info)

        summary = {
            "run_id": self.run_id,
            "run_name": p.run_name,
            "status": self.state.status.value,
            "metrics": metrics,
            "checkpoint": checkpoint,
            "run_dir": p.run_dir,
            "wall_time_s": ended - self.started,
            "resumed_from_step": attempts.get("resumed_from_step", p.resumes_from_step),
            "error": error,
            **{k: v for k, v in attempts.items() if k != "resumed_from_step"},
        }
        if after is not None:
            after(self, summary)
        rundir.write_json(p.run_dir, rundir.SUMMARY_FILE, summary)
        tracking.finish(tracker, summary)
        return summary
