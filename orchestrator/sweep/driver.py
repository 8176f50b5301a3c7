"""Running a sweep: `orch sweep SPEC [--resume]` drives Ray Tune from here.

    orch sweep jobs/mnist_mlp.yaml                        # a new sweep: <name>-sweep-<time>
    orch sweep jobs/mnist_mlp.yaml sweep.num_samples=8    # dotted overrides, as for orch run
    orch sweep jobs/mnist_mlp.yaml --resume               # continue the latest interrupted sweep
    orch sweep jobs/mnist_mlp.yaml --resume --name mnist-mlp-sweep-20250101-030000

`run_sweep` builds a Tuner over orchestrator/sweep/trial.py's function trainable with the
objects of orchestrator/sweep/tune.py; Tune callbacks on the driver write one ledger row per
trial event (kind="trial", sweep_id=...) and print a live table of trials. At the end:
summarize() picks the best trial (by its last reported metric) and plots the metric per trial.

Trials are named after their sweep, `<sweep_id>-<n>-<hash>` (orchestrator/sweep/tune.py's
TrialNamer): the ledger's run_name, Tune's trial folder and the Train run's folder.

Sweep directory `<storage_path>/<sweep_id>/`: Tune's experiment state and trial folders,
`trials/<trial name>/` (each trial's Train run: metrics.jsonl, checkpoint_NNNNNN/),
`sweep.json` (what ran), `best.json` (best config, metric, checkpoint) and `metric.png`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.queue.lease import SWEEP_ENV
from orchestrator.sweep.spec import (
    BEST_FILE,
    PLOT_FILE,
    SWEEP_FILE,
    SweepExistsError,
    SweepNotFoundError,
    SweepSpec,
    in_process_reason,
    trial_base,
    trial_request,
    validate_sweep,
)
from orchestrator.sweep.trial import TrialContext, ledger_trial_rows, run_trial
from orchestrator.sweep.tune import (
    param_space,
    seed_points,
    trial_resources,
    trial_retries,
    tune_config,
)
from orchestrator.worker.faults import ENV as FAULTS_ENV


def _where(checkpoint) -> str:
    """A Tune checkpoint's path, or its URI on object storage ("" for none)."""
    if checkpoint is None:
        return ""
    return rundir.uri_of(checkpoint.filesystem, checkpoint.path)


def _trial_values(trial, keys) -> dict[str, Any]:
    return {k: trial.config.get(k) for k in keys}


def _callback_classes():
    from ray.tune import Callback

    class LedgerRows(Callback):
        """One ledger row per trial event: RUNNING on start (attempt N, resumed checkpoint),
        then SUCCEEDED (ran to the end), STOPPED (the scheduler stopped it early) or FAILED."""

        def __init__(self, storage, sweep_id, workload, keys, metric):
            self.storage, self.sweep_id, self.workload = storage, sweep_id, workload
            self.keys, self.metric = list(keys), metric
            self.replayed: set[str] = set()
            self.started: dict[str, float] = {}  # trial id -> its first start, for end rows

        def _row(self, trial, status, **kw):
            from orchestrator import ledger

            extra = {
                "trial_id": trial.trial_id,
                "trial_name": str(trial),
                "config": _trial_values(trial, self.keys),
                **kw.pop("extra", {}),
            }
            ledger.record(
                self.storage,
                run_id=f"{self.sweep_id}/{trial.trial_id}",
                run_name=str(trial),
                workload=self.workload,
                status=status,
                sweep_id=self.sweep_id,
                parent_run=self.sweep_id,
                kind="trial",
                extra=extra,
                **kw,
            )

        def on_trial_start(self, iteration, trials, trial, **info):
            rows = ledger_trial_rows(self.storage, self.sweep_id, trial.trial_id)
            if any(r["status"] in ("SUCCEEDED", "STOPPED") for r in rows):
                # Ended before the interruption (Tune's snapshot lagged): run_trial replays
                # its recorded result without training, and the ledger keeps its one end row.
                self.replayed.add(trial.trial_id)
                return
            attempt = 1 + sum(1 for r in rows if r["status"] == "RUNNING")
            ckpt = _where(trial.checkpoint)
            now = time.time()
            # Its first start: an earlier attempt's (also one before --resume), else now.
            starts = [r["start_time"].timestamp() for r in rows if r["start_time"] is not None]
            self.started[trial.trial_id] = min(starts, default=now)
            self._row(
                trial,
                "RUNNING",
                start_time=now,
                latest_checkpoint=ckpt,
                extra={"attempt": attempt, "resumed_from": ckpt},
            )

        def _end(self, trial, status, error=""):
            if trial.trial_id in self.replayed:
                return
            last = {
                k: v
                for k, v in (trial.last_result or {}).items()
                if isinstance(v, (int, float, str)) and not k.startswith("time_since")
            }
            ckpt = _where(trial.checkpoint)
            self._row(
                trial,
                status,
                start_time=self.started.get(trial.trial_id),
                end_time=time.time(),
                metrics=last,
                error=error,
                latest_checkpoint=ckpt,
                run_dir=str(last.get("train_run_dir", "")),
                extra={
                    "reports": last.get("training_iteration", 0),
                    "early_stopped": status == "STOPPED",
                    "replayed": bool(last.get("replayed")),
                },
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            finished = (trial.last_result or {}).get("finished") == 1
            self._end(trial, "SUCCEEDED" if finished else "STOPPED")

        def on_trial_error(self, iteration, trials, trial, **info):
            err = ""
            if trial.error_file and os.path.exists(trial.error_file):
                err = Path(trial.error_file).read_text()[-2000:]
            self._end(trial, "FAILED", error=err or "trial failed")

    class LiveTable(Callback):
        """Prints the trial table when a trial starts or ends, and every `every_s` otherwise."""

        def __init__(self, keys, metric, console, every_s=10.0):
            self.keys, self.metric, self.every_s = list(keys), metric, every_s
            self.console = console
            self.last = 0.0
            self.stopped: set[str] = set()

        def __getstate__(self):
            # Tune pickles its RunConfig, callbacks included; a console holds locks.
            return {**self.__dict__, "console": None}

        def _show(self, trials):
            from rich import get_console

            console = self.console or get_console()
            console.print(trials_table(trials, self.keys, self.metric, self.stopped))
            self.last = time.time()

        def on_trial_start(self, iteration, trials, trial, **info):
            self._show(trials)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if time.time() - self.last > self.every_s:
                self._show(trials)

        def on_trial_complete(self, iteration, trials, trial, **info):
            if (trial.last_result or {}).get("finished") != 1:
                self.stopped.add(trial.trial_id)
            self._show(trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._show(trials)

    return LedgerRows, LiveTable


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def trials_table(trials, keys, metric, stopped=()):
    from rich.table import Table

    t = Table(title="trials", show_lines=False)
    for col in ("trial", "status", *keys, "reports", "step", metric):
        t.add_column(col)
    for tr in trials:
        r = tr.last_result or {}
        status = tr.status
        if status == "TERMINATED" and tr.trial_id in stopped:
            status = "STOPPED EARLY"
        t.add_row(
            str(tr),
            status,
            *(_fmt(tr.config.get(k)) for k in keys),
            _fmt(r.get("training_iteration")),
            _fmt(r.get("step")),
            _fmt(r.get(metric)),
        )
    return t


def new_sweep_id(spec) -> str:
    return f"{spec.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"


def find_resumable(storage: str, spec_name: str) -> str | None:
    """The newest sweep directory of this spec that Tune can restore."""
    from ray.tune import Tuner

    cands = []
    for name, is_dir in rundir.list_dir(storage):
        if not is_dir:
            continue
        meta = rundir.read_json(rundir.join(storage, name), SWEEP_FILE)
        if (meta.get("spec") or {}).get("name") == spec_name:
            cands.append((meta.get("created", 0), name))
    for _, name in sorted(cands, reverse=True):
        if Tuner.can_restore(rundir.join(storage, name)):
            return name
    return None


def run_sweep(
    spec,
    *,
    resume: bool = False,
    sweep_id: str | None = None,
    address: str | None = None,
    console=None,
    points_to_evaluate: list[dict] | None = None,
    schedule_id: str = "",
    num_cpus: int | None = None,
    live_every_s: float = 10.0,
) -> dict[str, Any]:
    """Run (or with resume=True continue) the spec's sweep. Returns the summary dict."""
    from ray import tune
    from rich import get_console

    from orchestrator import ledger, runtime
    from orchestrator.rundir import resolve_storage
    from orchestrator.spec import import_workload

    console = console or get_console()
    storage = resolve_storage(spec.storage_path)
    if resume:
        sweep_id = sweep_id or find_resumable(storage, spec.name)
        if not sweep_id:
            raise SweepNotFoundError(
                f"no interrupted sweep of '{spec.name}' under {storage} to resume "
                "(run orch sweep SPEC without --resume to start one)"
            )
        meta = rundir.read_json(rundir.join(storage, sweep_id), SWEEP_FILE)
        if not meta:
            raise SweepNotFoundError(
                f"{rundir.join(storage, sweep_id)} is not a sweep directory (no {SWEEP_FILE})"
            )
        from orchestrator.spec import validate_spec

        spec = validate_spec(meta["spec"])  # the spec the sweep started with
        points_to_evaluate = meta.get("points_to_evaluate")
        schedule_id = meta.get("schedule_id", schedule_id)
    sw = validate_sweep(spec)
    if not resume:  # what the searcher is seeded with: each once, within num_samples
        points_to_evaluate = seed_points(sw, points_to_evaluate)
    sweep_id = sweep_id or new_sweep_id(spec)
    sweep_dir = rundir.join(storage, sweep_id)  # a local path or a URI
    if not resume:
        if rundir.exists(sweep_dir):
            raise SweepExistsError(
                f"sweep {sweep_id} exists already in {storage}; use --resume to "
                "continue it or choose another --name"
            )
        meta = {
            "sweep_id": sweep_id,
            "spec": spec.to_dict(),
            "schedule_id": schedule_id,
            "points_to_evaluate": points_to_evaluate or [],
            "created": time.time(),
        }
        rundir.write_json(sweep_dir, SWEEP_FILE, meta)

    common = dict(
        run_id=sweep_id,
        run_name=sweep_id,
        workload=spec.workload,
        spec_hash=spec.spec_hash(),
        run_dir=str(sweep_dir),
        sweep_id=sweep_id,
        kind="sweep",
    )
    sweep_extra = {
        "metric": sw.metric,
        "mode": sw.mode,
        "algorithm": sw.algorithm,
        "scheduler": sw.scheduler.type,
        "num_samples": sw.num_samples,
        "schedule_id": schedule_id,
        "spec_name": spec.name,
        "resumed": resume,
        "points_to_evaluate": points_to_evaluate or [],
    }
    started = time.time()
    ledger.record(storage, status="RUNNING", start_time=started, extra=sweep_extra, **common)

    workers, per = trial_request(sw, spec)
    kind = getattr(import_workload(spec.workload), "KIND", "train")
    queue_job = os.environ.get(SWEEP_ENV, "")
    not_in_process = in_process_reason(sw, spec, kind, queued=bool(queue_job))
    ctx = TrialContext(
        sweep_id=sweep_id,
        storage=storage,
        sweep_dir=str(sweep_dir),
        base=trial_base(spec),
        sweep=sw.model_dump(mode="json"),
        queue_job=queue_job,
        in_process=not_in_process is None,
        faults=os.environ.get(FAULTS_ENV, ""),
    )
    keys = list(sw.search_space)
    LedgerRows, LiveTable = _callback_classes()
    callbacks = [
        LedgerRows(storage, sweep_id, spec.workload, keys, sw.metric),
        LiveTable(keys, sw.metric, console, live_every_s),
    ]
    from orchestrator import tracking  # Ray's TBX + MLflow logger callbacks (tracking.py)

    callbacks += tracking.tune_callbacks(spec, tags={"orch.sweep_id": sweep_id})
    # A trial that drives its Train run (whose workers hold the CPUs/GPUs) reserves no CPU,
    # only a token of memory (Tune needs a non-empty bundle); one that trains in its own
    # process reserves its worker's CPUs.
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, ctx=ctx),
        trial_resources(kind, workers, per, in_process=ctx.in_process),
    )
    status, error, grid, info, tuner = "FAILED", "", None, None, None
    try:
        info = runtime.connect(address, num_cpus=num_cpus)
        sw = fit_concurrency(sw, spec, console)
        console.print(
            f"[bold]orch sweep[/bold] {sweep_id}: {sw.num_samples} sample(s) of "
            f"{', '.join(keys)}; {sw.algorithm} search, scheduler {sw.scheduler.type}, "
            f"{sw.metric} ({sw.mode}); {'resuming' if resume else 'new'}; dir {sweep_dir}"
        )
        console.print(
            "  trials: each in its Tune trial's own process (sweep.in_process)"
            if ctx.in_process
            else f"  trials: each a Ray Train run ({not_in_process})"
        )
        if resume:
            tuner = tune.Tuner.restore(
                str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(sw),
                tune_config=tune_config(
                    sw, points_to_evaluate, sweep_id, reuse_actors=ctx.in_process
                ),
                run_config=tune.RunConfig(
                    name=sweep_id,
                    storage_path=storage,
                    callbacks=callbacks,
                    verbose=0,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep),
                    failure_config=tune.FailureConfig(
                        max_failures=trial_retries(sw, spec.failure.max_failures, ctx.in_process)
                    ),
                ),
            )
        grid = tuner.fit()
        status = "SUCCEEDED" if not grid.errors else "FAILED"
        if grid.errors:
            error = f"{len(grid.errors)} trial(s) failed; first: {str(grid.errors[0])[:1500]}"
    except KeyboardInterrupt:
        status, error = "STOPPED", "interrupted (Ctrl-C); continue with orch sweep SPEC --resume"
    except Exception as exc:  # noqa: BLE001 - the sweep row records the cause
        error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if grid is None and tuner is not None:
            try:  # interrupted or failed: still summarize what the trials reported
                grid = tuner.get_results()
            except Exception:  # noqa: BLE001
                grid = None
        if info is not None:
            runtime.shutdown(info)

    summary = summarize(sweep_dir, sw, grid)
    summary.update(
        sweep_id=sweep_id,
        status=status,
        error=error,
        sweep_dir=str(sweep_dir),
        wall_time_s=time.time() - started,
        schedule_id=schedule_id,
    )
    ledger.record(
        storage,
        status=status,
        start_time=started,
        end_time=time.time(),
        metrics={sw.metric: summary.get("best_metric")}
        if summary.get("best_metric") is not None
        else {},
        latest_checkpoint=summary.get("best_checkpoint") or "",
        error=error,
        extra={
            **sweep_extra,
            "best_config": summary.get("best_config"),
            "best_trial": summary.get("best_trial"),
            "trials": summary.get("trials", []),
        },
        **common,
    )
    rundir.write_json(sweep_dir, BEST_FILE, summary)
    return summary


def fit_concurrency(sw: SweepSpec, spec, console) -> SweepSpec:
    """Refuse a trial the cluster can never hold; run no more trials at once than fit (a
    Train worker group waiting for CPUs times out after 60 s and retries)."""
    import ray

    from orchestrator import runtime

    workers, per = trial_request(sw, spec)
    runtime.check_fits(workers, per)
    total = ray.cluster_resources()
    fits = min(int(total.get(k, 0.0) // (v * workers)) for k, v in per.items() if v > 0)
    if fits < sw.max_concurrent:
        console.print(
            f"max_concurrent {sw.max_concurrent} -> {fits}: the cluster holds "
            f"{fits} trial(s) of {workers} x {per} at once"
        )
        return sw.model_copy(update={"max_concurrent": max(1, fits)})
    return sw


def summarize(sweep_dir: str, sw: SweepSpec, grid) -> dict[str, Any]:
    """Best trial (by its last reported metric), every trial's outcome, and the PNG."""
    out: dict[str, Any] = {"metric": sw.metric, "mode": sw.mode, "trials": []}
    if grid is None:
        return out
    histories: dict[str, Any] = {}
    best = None
    for res in grid:
        m = res.metrics or {}
        tid = m.get("trial_id") or (Path(res.path).name if res.path else "?")
        name = Path(res.path).name if res.path else tid  # Tune's trial folder: the trial's name
        cfg = {k: (res.config or {}).get(k) for k in sw.search_space}
        row = {
            "trial_id": tid,
            "trial": name,
            "config": cfg,
            sw.metric: m.get(sw.metric),
            "reports": m.get("training_iteration"),
            "step": m.get("step"),
            "finished": m.get("finished") == 1,
            "error": str(res.error)[:300] if res.error else "",
        }
        out["trials"].append(row)
        df = res.metrics_dataframe
        if df is not None and sw.metric in getattr(df, "columns", []):
            histories[name] = df
        v = m.get(sw.metric)
        if v is None or res.error or (isinstance(v, float) and math.isnan(v)):
            continue
        better = best is None or (v > best[0] if sw.mode == "max" else v < best[0])
        if better:
            best = (v, tid, name, cfg, res)
    if best is not None:
        v, tid, name, cfg, res = best
        ckpt = (
            _where(res.checkpoint)
            if res.checkpoint is not None
            else (res.metrics or {}).get("checkpoint_path")
        )
        out.update(
            best_metric=v,
            best_trial=name,
            best_trial_id=tid,
            best_config=cfg,
            best_checkpoint=ckpt,
            best_train_run_dir=(res.metrics or {}).get("train_run_dir"),
        )
    if histories:
        out["plot"] = str(
            plot_trials(
                histories,
                sw.metric,
                rundir.join(sweep_dir, PLOT_FILE),
                {r["trial"] for r in out["trials"] if not r["finished"]},
            )
        )
    return out


def plot_trials(histories: dict[str, Any], metric: str, path: str, stopped=()) -> str:
    """One line per trial: metric against the training step (or report number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tid, df in sorted(histories.items()):
        x = df["step"] if "step" in df.columns else df["training_iteration"]
        label = tid + (" (stopped early)" if tid in stopped else "")
        ax.plot(
            x,
            df[metric],
            marker="o",
            markersize=3,
            linestyle="--" if tid in stopped else "-",
            label=label,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    rundir.write_bytes(path, buf.getvalue())  # a local file or an object alike
    return path
