"""One sweep trial, run inside a Tune actor: one Train run (or RLlib loop) of the spec with
the trial's sampled values.

Each trial plans its spec (`plan(spec, trial=True)`: every log is also a Train report) and
fits the TorchTrainer that orchestrator/launch/ray_train.py builds for every run, with one
UserCallback more: it forwards each Train report to the trial, which reports it to Tune with
its checkpoint, so ASHA sees per-step metrics, PBT can clone checkpoints and Tuner.restore
continues unfinished trials from their latest checkpoint. RLlib workloads run their own
train_loop here, each iteration reported to Tune.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from orchestrator import rundir
from orchestrator.sweep.spec import TRIALS_DIR, SweepSpec, trial_request, trial_spec_dict


@dataclass
class TrialContext:
    """What every trial needs, shipped once through tune.with_parameters."""

    sweep_id: str
    storage: str  # where the ledger lives (absolute)
    sweep_dir: str
    base: dict[str, Any]
    sweep: dict[str, Any]
    # The queue's id of this sweep when it runs through the queue: each trial then waits there
    # for its workers (orchestrator/queue/lease.py). Empty: trials start as Tune starts them.
    queue_job: str = ""
    # Each trial's loop runs in this trial's own process, no Train run (spec.in_process_reason).
    in_process: bool = False
    # The sweep driver's ORCH_FAULTS (worker/faults.py): a trial plans in a Tune actor, whose
    # environment on a cluster is the raylet's, not the driver's.
    faults: str = ""


# Tune reserves `done`; the workload's final report says done=1, which Tune would take as
# "stop now". It reaches Tune as `finished` instead.
_RENAME = {"done": "finished"}


def _forwarder_class():
    from ray.train import UserCallback

    class ForwardToTune(UserCallback):
        """Runs in the Train controller: hands each rank-0 report (and its checkpoint path) to
        the trial through a one-slot queue; the trial reports it to Tune."""

        def __init__(self, queue):
            self.queue = queue

        def after_report(self, run_context, metrics, checkpoint):
            row = {_RENAME.get(k, k): v for k, v in dict(metrics[0] if metrics else {}).items()}
            path = None
            if checkpoint is not None:  # a path, or a URI on object storage
                from orchestrator import rundir

                path = rundir.uri_of(checkpoint.filesystem, checkpoint.path)
            self.queue.put((row, path))

    return ForwardToTune


def ledger_trial_rows(storage: str, sweep_id: str, trial_id: str) -> list[dict[str, Any]]:
    from orchestrator import ledger

    return [
        r
        for r in ledger.read_events(storage).to_pylist()
        if r["kind"] == "trial"
        and r["sweep_id"] == sweep_id
        and json.loads(r["extra"] or "{}").get("trial_id") == trial_id
    ]


def _attempt_name(trials_dir: str, name: str, restoring: bool) -> str:
    """The trial's name (`<sweep_id>-<n>-<hash>`) for its first Train run; name-rN when it
    continues from a Tune checkpoint (after --resume or a PBT exploit) in a fresh Train run."""
    if not restoring:
        return name
    n = 1
    while rundir.exists(rundir.join(trials_dir, f"{name}-r{n}")):
        n += 1
    return f"{name}-r{n}"


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable: one trial = one Train run (or RLlib loop) of the spec."""
    from ray import tune

    from orchestrator.plan import plan
    from orchestrator.spec import validate_spec

    sw = SweepSpec.model_validate(ctx.sweep)
    tctx = tune.get_context()
    trial_id = tctx.get_trial_id()
    # The ledger is the record of what ran: a trial it already shows as finished (Tune's
    # experiment snapshot can lag a killed driver by seconds) is reported, not run again.
    done = [
        r
        for r in ledger_trial_rows(ctx.storage, ctx.sweep_id, trial_id)
        if r["status"] in ("SUCCEEDED", "STOPPED")
    ]
    if done:
        tune.report({**json.loads(done[-1]["metrics"] or "{}"), "finished": 1, "replayed": 1})
        return

    tune_ckpt = tune.get_checkpoint()
    trials_dir = rundir.join(ctx.sweep_dir, TRIALS_DIR)
    # trials/<trial name>/: the name Tune gave the trial (the sweep's, orchestrator/sweep/tune.py)
    name = tctx.get_trial_name() or trial_id
    run_name = _attempt_name(trials_dir, name, tune_ckpt is not None)
    spec = validate_spec(trial_spec_dict(ctx.base, config, sw, trials_dir, run_name))
    # A Tune checkpoint (local or shared storage: the Train workers read it) to continue from.
    resume = rundir.uri_of(tune_ckpt.filesystem, tune_ckpt.path) if tune_ckpt is not None else None
    if resume is None and ctx.in_process:
        resume = _left_by_an_earlier_attempt(rundir.join(trials_dir, run_name))
    p = plan(spec, trial=True, resume_from=resume, faults=ctx.faults or None)
    if not ctx.queue_job:
        _run(p, trial_id, sw.metric, ctx.in_process)
        return
    from orchestrator.queue.lease import TrialLease

    workers, per = trial_request(sw, spec)
    with TrialLease(ctx.queue_job, name, workers, per):
        _run(p, trial_id, sw.metric, ctx.in_process)


def _left_by_an_earlier_attempt(run_dir: str) -> str | None:
    """An in-process trial restarted with no checkpoint from Tune: the newest complete one an
    earlier attempt of this trial left in its run dir, or None. Tune registers a checkpoint
    only when its driver takes the report; a node lost after the checkpoint was written but
    before that started the trial over. (A Train trial finds it through Ray Train's own
    record of the run dir.)"""
    try:
        found = rundir.latest_complete(run_dir) if rundir.exists(run_dir) else None
    except Exception:  # noqa: BLE001 - unreadable now: start over, as Tune asked
        return None
    if found is not None:
        print(f"[orch] no checkpoint from Tune; {rundir.basename(found)} is in the trial's run dir")
    return found


def _run(p, trial_id: str, metric: str, in_process: bool = False) -> None:
    if p.kind == "rllib":
        _run_rllib_trial(p, metric)
    elif in_process:
        _run_in_process(p, metric)
    else:
        _run_train_trial(p, trial_id, metric)


def for_tune(row: dict[str, Any], metric: str, checkpoint: bool = False) -> dict[str, Any] | None:
    """A row as Tune gets it, or None when it is not reported. Tune requires the sweep's
    metric in every report (TuneController and PBT raise without it), but a workload leaves
    out a metric it has not measured yet (accuracy before the first evaluation) rather than
    report a 0.0 that never happened. Such a row is not reported, unless it carries a
    checkpoint Tune must register (restore, PBT): then the metric is NaN, which ASHA never
    stops on and PBT leaves out of its quantiles. A final row is reported as it is, so a
    metric the workload never reports still fails loudly."""
    if metric in row or row.get("finished") == 1:
        return row
    if not checkpoint:
        return None
    return {**row, metric: float("nan")}


def _run_train_trial(p, trial_id: str, metric: str) -> None:
    from ray.util.queue import Empty, Queue

    from orchestrator.launch import ray_train
    from orchestrator.runtime import default_train_polling
    from orchestrator.spec import dump_yaml

    rundir.write_text(p.run_dir, rundir.SPEC_FILE, dump_yaml(p.resolved_spec))
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    default_train_polling()  # a trial on a cluster started without it: each report waits a poll
    from orchestrator.worker.entry import train_loop

    trainer = ray_train.trainer(
        p,
        train_loop,
        # Tune stops a trial by killing its actor, and the controller with it: the cleaner
        # frees the placement group (orchestrator/launch/ray_train.py).
        keep_cleaner=True,
        callbacks=[_forwarder_class()(queue)],
    )
    box: dict[str, Any] = {}

    def fit():
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - surfaced in the trial below
            box["error"] = exc

    thread = threading.Thread(target=fit, daemon=True, name=f"fit-{trial_id}")
    thread.start()
    while True:
        try:
            row, path = queue.get(timeout=0.5)
        except Empty:
            if not thread.is_alive() and queue.empty():
                break
            continue
        _to_tune(row, path, metric, p.run_dir)
    thread.join()
    if "error" in box:
        raise box["error"]
    result = box.get("result")
    if result is not None and result.error is not None:
        raise result.error


def _to_tune(row: dict[str, Any], path: str | None, metric: str, run_dir: str) -> None:
    """One report to Tune, the same from every kind of trial: the row by the for_tune rule
    (None: not reported), with the checkpoint at `path` when there is one."""
    from ray import tune

    row = for_tune({**row, "train_run_dir": run_dir}, metric, checkpoint=path is not None)
    if row is None:
        return
    if path is not None:
        row["checkpoint_path"] = path
        tune.report(row, checkpoint=tune.Checkpoint(path))
    else:
        tune.report(row)


def _run_in_process(p, metric: str) -> None:
    """One CPU worker's train_loop in this trial's own process: no Train controller and no
    worker actor to start, and a process Tune reuses for the next trial (its imports and
    cached data with it). The Session hands each row and checkpoint here (reporting_to), and
    they reach Tune as a Train trial's reports do."""
    from orchestrator.spec import dump_yaml
    from orchestrator.worker import session
    from orchestrator.worker.entry import train_loop

    rundir.write_text(p.run_dir, rundir.SPEC_FILE, dump_yaml(p.resolved_spec))

    def report(metrics: dict[str, Any], path: str | None) -> None:
        _to_tune({_RENAME.get(k, k): v for k, v in metrics.items()}, path, metric, p.run_dir)

    with session.reporting_to(report):
        train_loop(p.worker.to_dict())


def _run_rllib_trial(p, metric: str) -> None:
    """RLlib workloads: the workload's own train_loop (it builds the Algorithm in this trial
    actor and calls train()), with each iteration reported to Tune (its checkpoint too)."""
    from ray import tune

    from orchestrator.spec import dump_yaml, import_workload

    mod = import_workload(p.workload)
    rundir.write_text(p.run_dir, rundir.SPEC_FILE, dump_yaml(p.resolved_spec))

    def report(row: dict[str, Any]) -> None:
        row = {k: v for k, v in row.items() if v is not None}
        path = row.pop("checkpoint", None)
        _to_tune(row, path or None, metric, p.run_dir)

    final = mod.train_loop(p.worker.to_dict(), on_iteration=report)
    final = {k: v for k, v in final.items() if v is not None and k != "checkpoint"}
    tune.report({**final, "finished": 1, "train_run_dir": p.run_dir})
