"""Hyper-parameter sweeps from the spec's `sweep:` section, run by Ray Tune.

    orch sweep jobs/mnist_mlp.yaml                        # a new sweep: <name>-sweep-<time>
    orch sweep jobs/mnist_mlp.yaml sweep.num_samples=8    # dotted overrides, as for orch run
    orch sweep jobs/mnist_mlp.yaml --resume               # continue the latest interrupted sweep
    orch sweep jobs/mnist_mlp.yaml --resume --name mnist-mlp-sweep-20250101-030000

The section (every key is checked, each error names its field):

    sweep:
      metric: accuracy          # a key the workload reports
      mode: max                 # max | min
      num_samples: 4            # trials (grid: repeats of the grid)
      max_concurrent: 2         # trials at once
      algorithm: random         # random | grid | optuna | hyperopt
      scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # none | asha | pbt
      resources: {workers: 1, cpus_per_worker: 1}   # per trial; default: the spec's resources
      report_every: 10          # steps between reports to Tune (ASHA/PBT decide on these)
      search_space:             # dotted spec keys -> one distribution each
        train.lr: {loguniform: [1.0e-4, 1.0e-1]}
        train.batch_size: {choice: [32, 64, 128]}
        train.hidden: {grid: [[128], [256, 128]]}
        train.weight_decay: {uniform: [0.0, 0.1]}
        seed: {randint: [0, 1000]}

How it runs (Ray 2.60, Train v2): each Tune trial is a function trainable that applies its
sampled values to the spec, plans it with `orchestrator.plan.plan()` and fits a TorchTrainer
(RLlib workloads: builds the algorithm from `orchestrator.rl` and calls train()). A Train
UserCallback forwards every Train report to the trial, which reports it to Tune with its
checkpoint, so ASHA sees per-step metrics, PBT can clone checkpoints and Tuner.restore
continues unfinished trials from their latest checkpoint. A Tune Callback on the driver
writes one ledger row per trial event (kind="trial", sweep_id=...) and prints a live table.

Sweep directory `<storage_path>/<sweep_id>/`: Tune's experiment state and trial folders,
`trials/<trial_id>/` (each trial's Train run: metrics.jsonl, checkpoint_NNNNNN/),
`sweep.json` (what ran), `best.json` (best config, metric, checkpoint) and `metric.png`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.errors import FieldError, OrchestratorError, SpecError

SWEEP_FILE = "sweep.json"
BEST_FILE = "best.json"
PLOT_FILE = "metric.png"
TRIALS_DIR = "trials"
TRIAL_DRIVER_MEMORY = 2**20  # bytes reserved by each trial's driver function
# Keys a sweep may not vary: they name or place the job, or configure the sweep itself.
FIXED_KEYS = ("name", "workload", "storage_path", "sweep", "schedule", "resources")


class SweepError(OrchestratorError):
    """A sweep cannot start or resume (nothing to resume, a trial failed, ...)."""

    exit_code = 5


# ---------------------------------------------------------------------------------------------
# The `sweep:` section


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


DIM_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


class Dim(_Strict):
    """One search dimension: exactly one of the keys below."""

    choice: list[Any] | None = Field(None, min_length=1, description="Sample one of these.")
    grid: list[Any] | None = Field(None, min_length=1, description="Try every one of these.")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], uniform.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], log-uniform.")
    randint: tuple[int, int] | None = Field(None, description="[low, high), integers.")

    @model_validator(mode="before")
    @classmethod
    def _known_kinds(cls, v: Any) -> Any:
        if isinstance(v, dict):
            import difflib

            unknown = [k for k in v if k not in DIM_KINDS]
            if unknown:
                guess = difflib.get_close_matches(str(unknown[0]), DIM_KINDS, n=1, cutoff=0.6)
                hint = f"did you mean '{guess[0]}'?" if guess else f"expected one of {', '.join(DIM_KINDS)}"
                raise ValueError(f"unknown distribution '{unknown[0]}'; {hint}")
        elif not isinstance(v, Dim):
            raise ValueError("expected a mapping with one of " + ", ".join(DIM_KINDS)
                             + " (e.g. {loguniform: [1.0e-4, 1.0e-1]})")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> Dim:
        set_ = [k for k in ("choice", "grid", "uniform", "loguniform", "randint")
                if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(
                "expected exactly one of choice, grid, uniform, loguniform, randint"
                + (f" (given: {', '.join(set_)})" if set_ else "")
            )
        kind = set_[0]
        if kind in ("uniform", "loguniform", "randint"):
            low, high = getattr(self, kind)
            if not low < high:
                raise ValueError(f"{kind}: expected low < high (given [{low}, {high}])")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: expected low > 0 (given {low})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "grid", "uniform", "loguniform", "randint")
                    if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def sample_value(self) -> Any:
        """A representative value (for checking the key against the spec)."""
        a = self.args
        return a[0] if self.kind in ("choice", "grid", "randint") else (
            math.sqrt(a[0] * a[1]) if self.kind == "loguniform" else (a[0] + a[1]) / 2)

    def to_tune(self, as_grid: bool = False):
        from ray import tune

        kind, a = self.kind, self.args
        if kind == "grid" or (as_grid and kind == "choice"):
            return tune.grid_search(list(a))
        if kind == "choice":
            return tune.choice(list(a))
        if kind == "uniform":
            return tune.uniform(*a)
        if kind == "loguniform":
            return tune.loguniform(*a)
        return tune.randint(*a)


class TrialResources(_Strict):
    workers: int = Field(1, ge=1, le=4096, description="Ray Train workers per trial.")
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)


class SchedulerSpec(_Strict):
    type: Literal["none", "asha", "pbt"] = Field("none", description="Trial scheduler.")
    # ASHA (ray.tune.schedulers.ASHAScheduler); times count reports to Tune.
    max_t: int = Field(100, ge=1, le=10**9, description="ASHA: most reports a trial gets.")
    grace_period: int = Field(1, ge=1, le=10**9, description="ASHA: reports before a trial can stop.")
    reduction_factor: float = Field(2.0, gt=1, le=100, description="ASHA: keep 1/rf at each rung.")
    # PBT (ray.tune.schedulers.PopulationBasedTraining)
    perturbation_interval: int = Field(2, ge=1, le=10**9, description="PBT: reports between exploits.")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="PBT: bottom/top fraction.")
    resample_probability: float = Field(0.25, ge=0, le=1, description="PBT: resample vs perturb.")

    @model_validator(mode="after")
    def _grace_le_max(self) -> SchedulerSpec:
        if self.type == "asha" and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class SweepSpec(_Strict):
    """The `sweep:` section of a job spec."""

    metric: str = Field(..., min_length=1, description="Reported metric to optimise.")
    mode: Literal["max", "min"] = Field(..., description="max or min.")
    search_space: dict[str, Dim] = Field(..., min_length=1, description="Dotted spec key -> distribution.")
    num_samples: int = Field(4, ge=1, le=100_000, description="Trials (grid: repeats of the grid).")
    max_concurrent: int = Field(1, ge=1, le=10_000, description="Trials running at once.")
    algorithm: Literal["random", "grid", "optuna", "hyperopt"] = "random"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: TrialResources | None = Field(None, description="Per trial; default: spec resources.")
    report_every: int | None = Field(None, ge=1, le=10**9, description="Steps between reports; default train.log_every.")
    max_failures: int = Field(0, ge=0, le=1000, description="Retries of a failed trial.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Searcher seed.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop the whole sweep after this.")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @field_validator("search_space", mode="before")
    @classmethod
    def _flatten_sections(cls, v: Any) -> Any:
        """`train: {lr: {loguniform: ..}}` (or a CLI override) is the same as `train.lr: ..`."""
        if not isinstance(v, dict):
            return v
        out: dict[str, Any] = {}

        def walk(d: dict, prefix: str) -> None:
            for k, val in d.items():
                key = f"{prefix}{k}"
                if (isinstance(val, dict) and val and not (set(val) & set(DIM_KINDS))
                        and all(isinstance(x, dict) for x in val.values())):
                    walk(val, key + ".")
                else:
                    out[key] = val
        walk(v, "")
        return out

    @field_validator("search_space")
    @classmethod
    def _keys_are_dotted_spec_keys(cls, v: dict[str, Dim]) -> dict[str, Dim]:
        for key in v:
            parts = key.split(".")
            if any(not p for p in parts):
                raise ValueError(f"'{key}': expected a dotted spec key such as train.lr")
            if parts[0] in FIXED_KEYS:
                raise ValueError(
                    f"'{key}': {parts[0]} cannot be swept (use sweep.resources for per-trial resources)"
                    if parts[0] == "resources" else f"'{key}': {parts[0]} cannot be swept")
        return v

    @model_validator(mode="after")
    def _algorithm_fits_space(self) -> SweepSpec:
        kinds = {k: d.kind for k, d in self.search_space.items()}
        if self.algorithm == "grid":
            cont = [k for k, kind in kinds.items() if kind not in ("choice", "grid")]
            if cont:
                raise ValueError(
                    f"algorithm grid needs choice/grid dimensions only; {', '.join(cont)} "
                    "is continuous (use algorithm random, optuna or hyperopt)")
        if self.algorithm in ("optuna", "hyperopt"):
            grids = [k for k, kind in kinds.items() if kind == "grid"]
            if grids:
                raise ValueError(
                    f"algorithm {self.algorithm} cannot take grid dimensions ({', '.join(grids)}); "
                    "use choice")
        if self.scheduler.type == "pbt" and self.algorithm != "random":
            raise ValueError("scheduler pbt explores by itself; use algorithm random")
        return self


def validate_sweep(spec) -> SweepSpec:
    """The spec's sweep section, with every search key checked against the spec and workload."""
    from pydantic import ValidationError

    from orchestrator.spec import pydantic_errors, validate_spec

    if not spec.sweep:
        raise SpecError([FieldError("sweep", "this spec has no sweep: section; add one "
                                    "(see docs/sweeps.md) to run orch sweep")])
    try:
        sw = SweepSpec.model_validate(spec.sweep)
    except ValidationError as exc:
        raise SpecError(pydantic_errors(exc, SweepSpec, prefix="sweep")) from None
    # Each key must be a real key of the spec (train.* of the workload's Args): apply a
    # representative value of every dimension and validate the result.
    base = trial_base(spec)
    errors: list[FieldError] = []
    for key, dim in sw.search_space.items():
        try:
            validate_spec(set_dotted(base, key, dim.sample_value()))
        except SpecError as exc:
            for e in exc.errors:
                errors.append(FieldError(f"sweep.search_space.{key}",
                                         f"{e.path}: {e.message}", e.given))
    if errors:
        raise SpecError(errors)
    return sw


# ---------------------------------------------------------------------------------------------
# Trial specs


def set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `a.b.c` set to value (sections created as needed)."""
    out = json.loads(json.dumps(data, default=str))
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
    return out


def trial_base(spec) -> dict[str, Any]:
    """The spec as a dict, without the sections that describe the sweep itself."""
    d = spec.to_dict()
    for key in ("sweep", "schedule"):
        d.pop(key, None)
    return d


def trial_spec_dict(base: dict[str, Any], values: dict[str, Any], sw: SweepSpec,
                    storage: str, run_name: str) -> dict[str, Any]:
    d = base
    for key, value in values.items():
        d = set_dotted(d, key, value)
    if sw.resources is not None:
        d["resources"] = {**d.get("resources", {}), **sw.resources.model_dump()}
    d["storage_path"] = storage
    d["name"] = run_name
    if sw.report_every is not None and isinstance(d.get("train"), dict) and "log_every" in d["train"]:
        d["train"]["log_every"] = sw.report_every
    if sw.scheduler.type == "pbt":
        # PBT clones checkpoints: make every report carry one.
        every = (d.get("train") or {}).get("log_every") or sw.report_every or 10
        d.setdefault("checkpoint", {})["every_steps"] = int(every)
    return d


# ---------------------------------------------------------------------------------------------
# Ray Tune objects


def param_space(sw: SweepSpec) -> dict[str, Any]:
    return {k: d.to_tune(as_grid=sw.algorithm == "grid") for k, d in sw.search_space.items()}


def search_algorithm(sw: SweepSpec, points_to_evaluate: list[dict] | None = None):
    """Ray Tune's searcher for `algorithm`, seeded with `points_to_evaluate` (warm start)."""
    points = [p for p in (points_to_evaluate or []) if p] or None
    if sw.algorithm in ("random", "grid"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # A SearchGenerator: Tune ignores TuneConfig.max_concurrent_trials for it, so the
        # limit goes here.
        return BasicVariantGenerator(points_to_evaluate=points, random_state=sw.seed,
                                     max_concurrent=sw.max_concurrent)
    if sw.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=sw.metric, mode=sw.mode, points_to_evaluate=points, seed=sw.seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(metric=sw.metric, mode=sw.mode, points_to_evaluate=points,
                          random_state_seed=sw.seed)


def trial_scheduler(sw: SweepSpec):
    """Ray Tune's scheduler; times are counted in reports (`training_iteration`)."""
    s = sw.scheduler
    if s.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", max_t=s.max_t,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    if s.type == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        mutations = {k: d.to_tune() for k, d in sw.search_space.items()}
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=mutations, quantile_fraction=s.quantile_fraction,
            resample_probability=s.resample_probability)
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def tune_config(sw: SweepSpec, points_to_evaluate: list[dict] | None = None):
    from ray import tune

    return tune.TuneConfig(
        metric=sw.metric, mode=sw.mode, num_samples=sw.num_samples,
        max_concurrent_trials=None if sw.algorithm in ("random", "grid") else sw.max_concurrent,
        search_alg=search_algorithm(sw, points_to_evaluate),
        scheduler=trial_scheduler(sw),
        time_budget_s=sw.time_budget_s,
        reuse_actors=False,
    )


# ---------------------------------------------------------------------------------------------
# The trial: runs in a Tune actor


@dataclass
class TrialContext:
    """What every trial needs, shipped once through tune.with_parameters."""

    sweep_id: str
    storage: str  # where the ledger lives (absolute)
    sweep_dir: str
    base: dict[str, Any]
    sweep: dict[str, Any]
    extra_env: dict[str, str] = field(default_factory=dict)


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
            self.queue.put((row, checkpoint.path if checkpoint is not None else None))

    return ForwardToTune


def _ledger_trial_rows(storage: str, sweep_id: str, trial_id: str) -> list[dict[str, Any]]:
    from orchestrator import ledger

    return [r for r in ledger.read_events(storage).to_pylist()
            if r["kind"] == "trial" and r["sweep_id"] == sweep_id
            and json.loads(r["extra"] or "{}").get("trial_id") == trial_id]


def _attempt_name(trials_dir: Path, trial_id: str, restoring: bool) -> str:
    """trial_id for a trial's first Train run; trial_id-rN when it continues from a Tune
    checkpoint (after --resume or a PBT exploit) in a fresh Train run."""
    if not restoring:
        return trial_id
    n = 1
    while (trials_dir / f"{trial_id}-r{n}").exists():
        n += 1
    return f"{trial_id}-r{n}"


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
    done = [r for r in _ledger_trial_rows(ctx.storage, ctx.sweep_id, trial_id)
            if r["status"] in ("SUCCEEDED", "STOPPED")]
    if done:
        tune.report({**json.loads(done[-1]["metrics"] or "{}"), "finished": 1, "replayed": 1})
        return

    tune_ckpt = tune.get_checkpoint()
    trials_dir = Path(ctx.sweep_dir) / TRIALS_DIR
    run_name = _attempt_name(trials_dir, trial_id, tune_ckpt is not None)
    spec = validate_spec(trial_spec_dict(ctx.base, config, sw, str(trials_dir), run_name))
    p = plan(spec)
    resume_from = None
    if tune_ckpt is not None:
        resume_from = tune_ckpt.path  # local or shared storage: the Train workers read it
    if p.kind == "rllib":
        _run_rllib_trial(p, resume_from)
    else:
        _run_train_trial(p, resume_from, trial_id)


def _run_train_trial(p, resume_from: str | None, trial_id: str) -> None:
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.util.queue import Empty, Queue

    from orchestrator.runtime import default_train_polling
    from orchestrator.spec import dump_yaml, import_workload

    spec = p.spec
    mod = import_workload(spec.workload)
    run_dir = Path(p.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.resolved.yaml").write_text(dump_yaml(spec))
    wc = p.worker_config()
    wc["report_metrics_to_ray"] = True  # every log becomes a Train report -> Tune result
    if resume_from:
        wc["resume_from"] = resume_from
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    default_train_polling()  # a trial on a cluster started without it: each report waits a poll
    from orchestrator.trainer import torch_trainer

    trainer = torch_trainer(
        mod.train_loop,
        # Tune stops a trial by killing its actor, and the controller with it: the cleaner
        # frees the placement group (orchestrator/trainer.py).
        keep_cleaner=True,
        train_loop_config=wc,
        backend=p.backend,
        scaling_config=ScalingConfig(num_workers=p.num_workers, use_gpu=p.use_gpu,
                                     resources_per_worker=p.resources_per_worker),
        run_config=RunConfig(
            name=p.run_name, storage_path=p.storage_path,
            # One more than asked: Train deletes checkpoint N-1 when it registers N+1, which
            # needs the one-slot queue to have taken N, which the trial takes only after it
            # has handed N-1 to Tune (a copy): so no checkpoint is deleted mid-copy.
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep + 1),
            failure_config=FailureConfig(max_failures=spec.failure.max_failures),
            callbacks=[_forwarder_class()(queue)],
        ),
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
        row = {**row, "train_run_dir": str(run_dir)}
        if path is not None:
            row["checkpoint_path"] = path
            tune.report(row, checkpoint=ray.train.Checkpoint.from_directory(path))
        else:
            tune.report(row)
    thread.join()
    if "error" in box:
        raise box["error"]
    result = box.get("result")
    if result is not None and result.error is not None:
        raise result.error


def _run_rllib_trial(p, resume_from: str | None) -> None:
    """RLlib workloads: the workload's own train_loop (it builds the Algorithm in this trial
    actor and calls train()), with each iteration reported to Tune (its checkpoint too)."""
    import ray.train
    from ray import tune

    from orchestrator import rl
    from orchestrator.spec import dump_yaml, import_workload

    rl.check_plan(p)
    mod = import_workload(p.spec.workload)
    run_dir = Path(p.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.resolved.yaml").write_text(dump_yaml(p.spec))
    config = p.worker_config()
    config.update(rl.env_runner_resources(p), resume_from=resume_from)

    def report(row: dict[str, Any]) -> None:
        row = {k: v for k, v in row.items() if v is not None}
        row["train_run_dir"] = str(run_dir)
        path = row.pop("checkpoint", None)
        if path:
            row["checkpoint_path"] = path
            tune.report(row, checkpoint=ray.train.Checkpoint.from_directory(path))
        else:
            tune.report(row)

    final = mod.train_loop(config, on_iteration=report)
    final = {k: v for k, v in final.items() if v is not None and k != "checkpoint"}
    tune.report({**final, "finished": 1, "train_run_dir": str(run_dir)})


def trial_resources(kind: str, workers: int, per_worker: dict[str, float]):
    """What Tune reserves for one trial's function. A Train trial's workers reserve their own
    resources (Train v2 places them), so its function needs none: a token of memory (Tune
    wants a non-empty bundle). An RLlib trial builds the Algorithm in the trial actor: one
    bundle for it (the Learner) and one per remote EnvRunner (resources.workers > 1)."""
    from ray.tune import PlacementGroupFactory

    if kind != "rllib":
        return {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY}
    head = {"CPU": per_worker.get("CPU", 1.0)}
    if per_worker.get("GPU"):
        head["GPU"] = per_worker["GPU"]
    runners = 0 if workers <= 1 else workers
    return PlacementGroupFactory([head] + [{"CPU": per_worker.get("CPU", 1.0)}] * runners)


# ---------------------------------------------------------------------------------------------
# Driver side: ledger rows and the live table


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

        def _row(self, trial, status, **kw):
            from orchestrator import ledger

            extra = {"trial_id": trial.trial_id, "config": _trial_values(trial, self.keys),
                     **kw.pop("extra", {})}
            ledger.record(self.storage, run_id=f"{self.sweep_id}/{trial.trial_id}",
                          run_name=str(trial), workload=self.workload, status=status,
                          sweep_id=self.sweep_id, parent_run=self.sweep_id, kind="trial",
                          extra=extra, **kw)

        def on_trial_start(self, iteration, trials, trial, **info):
            rows = _ledger_trial_rows(self.storage, self.sweep_id, trial.trial_id)
            if any(r["status"] in ("SUCCEEDED", "STOPPED") for r in rows):
                # Ended before the interruption (Tune's snapshot lagged): run_trial replays
                # its recorded result without training, and the ledger keeps its one end row.
                self.replayed.add(trial.trial_id)
                return
            attempt = 1 + sum(1 for r in rows if r["status"] == "RUNNING")
            ckpt = trial.checkpoint.path if trial.checkpoint is not None else ""
            self._row(trial, "RUNNING", start_time=time.time(), latest_checkpoint=ckpt,
                      extra={"attempt": attempt, "resumed_from": ckpt})

        def _end(self, trial, status, error=""):
            if trial.trial_id in self.replayed:
                return
            last = {k: v for k, v in (trial.last_result or {}).items()
                    if isinstance(v, (int, float, str)) and not k.startswith("time_since")}
            ckpt = trial.checkpoint.path if trial.checkpoint is not None else ""
            self._row(trial, status, end_time=time.time(), metrics=last, error=error,
                      latest_checkpoint=ckpt, run_dir=str(last.get("train_run_dir", "")),
                      extra={"reports": last.get("training_iteration", 0),
                             "early_stopped": status == "STOPPED",
                             "replayed": bool(last.get("replayed"))})

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

        def __init__(self, keys, metric, every_s=10.0):
            self.keys, self.metric, self.every_s = list(keys), metric, every_s
            self.last = 0.0
            self.stopped: set[str] = set()

        def _show(self, trials):
            from rich.console import Console

            Console().print(trials_table(trials, self.keys, self.metric, self.stopped))
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
        t.add_row(tr.trial_id, status, *(_fmt(tr.config.get(k)) for k in keys),
                  _fmt(r.get("training_iteration")), _fmt(r.get("step")), _fmt(r.get(metric)))
    return t


# ---------------------------------------------------------------------------------------------
# Running a sweep


def new_sweep_id(spec) -> str:
    return f"{spec.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"


def find_resumable(storage: str, spec_name: str) -> str | None:
    """The newest sweep directory of this spec that Tune can restore."""
    from ray.tune import Tuner

    cands = []
    for f in Path(storage).glob(f"*/{SWEEP_FILE}"):
        try:
            meta = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (meta.get("spec") or {}).get("name") == spec_name:
            cands.append(f.parent)
    cands.sort(key=lambda d: d.stat().st_mtime)
    for d in reversed(cands):
        if Tuner.can_restore(str(d)):
            return d.name
    return None


def run_sweep(spec, *, resume: bool = False, sweep_id: str | None = None,
              address: str | None = None, console=None, points_to_evaluate: list[dict] | None = None,
              schedule_id: str = "", num_cpus: int | None = None, live_every_s: float = 10.0) -> dict[str, Any]:
    """Run (or with resume=True continue) the spec's sweep. Returns the summary dict."""
    from ray import tune
    from rich.console import Console

    from orchestrator import ledger, runtime
    from orchestrator.plan import resolve_storage
    from orchestrator.spec import import_workload

    console = console or Console()
    storage = resolve_storage(spec.storage_path)
    if resume:
        sweep_id = sweep_id or find_resumable(storage, spec.name)
        if not sweep_id:
            raise SweepError(f"no interrupted sweep of '{spec.name}' under {storage} to resume "
                             "(run orch sweep SPEC without --resume to start one)")
        meta_path = Path(storage) / sweep_id / SWEEP_FILE
        if not meta_path.exists():
            raise SweepError(f"{Path(storage) / sweep_id} is not a sweep directory (no {SWEEP_FILE})")
        meta = json.loads(meta_path.read_text())
        from orchestrator.spec import validate_spec

        spec = validate_spec(meta["spec"])  # the spec the sweep started with
        points_to_evaluate = meta.get("points_to_evaluate")
        schedule_id = meta.get("schedule_id", schedule_id)
    sw = validate_sweep(spec)
    sweep_id = sweep_id or new_sweep_id(spec)
    sweep_dir = Path(storage) / sweep_id
    if not resume:
        if sweep_dir.exists():
            raise SweepError(f"sweep {sweep_id} exists already in {storage}; use --resume to "
                             "continue it or choose another --name")
        sweep_dir.mkdir(parents=True)
        meta = {"sweep_id": sweep_id, "spec": spec.to_dict(), "schedule_id": schedule_id,
                "points_to_evaluate": points_to_evaluate or [], "created": time.time()}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(meta, indent=2, default=str))

    common = dict(run_id=sweep_id, run_name=sweep_id, workload=spec.workload,
                  spec_hash=spec.spec_hash(), run_dir=str(sweep_dir), sweep_id=sweep_id,
                  kind="sweep")
    sweep_extra = {"metric": sw.metric, "mode": sw.mode, "algorithm": sw.algorithm,
                   "scheduler": sw.scheduler.type, "num_samples": sw.num_samples,
                   "schedule_id": schedule_id, "spec_name": spec.name, "resumed": resume,
                   "points_to_evaluate": points_to_evaluate or []}
    started = time.time()
    ledger.record(storage, status="RUNNING", start_time=started, extra=sweep_extra, **common)

    ctx = TrialContext(sweep_id=sweep_id, storage=storage, sweep_dir=str(sweep_dir),
                       base=trial_base(spec), sweep=sw.model_dump(mode="json"))
    keys = list(sw.search_space)
    LedgerRows, LiveTable = _callback_classes()
    callbacks = [LedgerRows(storage, sweep_id, spec.workload, keys, sw.metric),
                 LiveTable(keys, sw.metric, live_every_s)]
    from orchestrator import tracking  # Ray's TBX + MLflow logger callbacks (tracking.py)

    callbacks += tracking.tune_callbacks(spec, tags={"orch.sweep_id": sweep_id})
    # The trial function only drives its Train run (whose workers hold the CPUs/GPUs), so it
    # reserves no CPU, only a token of memory (Tune needs a non-empty bundle).
    workers, per = trial_request(sw, spec)
    kind = getattr(import_workload(spec.workload), "KIND", "train")
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    trial_resources(kind, workers, per))
    status, error, grid, info, tuner = "FAILED", "", None, None, None
    try:
        info = runtime.connect(address, num_cpus=num_cpus)
        sw = fit_concurrency(sw, spec, console)
        console.print(f"[bold]orch sweep[/bold] {sweep_id}: {sw.num_samples} sample(s) of "
                      f"{', '.join(keys)}; {sw.algorithm} search, scheduler {sw.scheduler.type}, "
                      f"{sw.metric} ({sw.mode}); {'resuming' if resume else 'new'}; dir {sweep_dir}")
        if resume:
            tuner = tune.Tuner.restore(str(sweep_dir), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space(sw),
                tune_config=tune_config(sw, points_to_evaluate),
                run_config=tune.RunConfig(
                    name=sweep_id, storage_path=storage, callbacks=callbacks, verbose=0,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep),
                    failure_config=tune.FailureConfig(max_failures=sw.max_failures),
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
    summary.update(sweep_id=sweep_id, status=status, error=error, sweep_dir=str(sweep_dir),
                   wall_time_s=time.time() - started, schedule_id=schedule_id)
    ledger.record(storage, status=status, start_time=started, end_time=time.time(),
                  metrics={sw.metric: summary.get("best_metric")} if summary.get("best_metric") is not None else {},
                  latest_checkpoint=summary.get("best_checkpoint") or "", error=error,
                  extra={**sweep_extra, "best_config": summary.get("best_config"),
                         "best_trial": summary.get("best_trial"),
                         "trials": summary.get("trials", [])}, **common)
    (sweep_dir / BEST_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def trial_request(sw: SweepSpec, spec) -> tuple[int, dict[str, float]]:
    """(workers, resources per worker) of one trial."""
    r = sw.resources or spec.resources
    per = {"CPU": float(r.cpus_per_worker)}
    if r.gpus_per_worker:
        per["GPU"] = float(r.gpus_per_worker)
    return int(r.workers), per


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
        console.print(f"max_concurrent {sw.max_concurrent} -> {fits}: the cluster holds "
                      f"{fits} trial(s) of {workers} x {per} at once")
        return sw.model_copy(update={"max_concurrent": max(1, fits)})
    return sw


def summarize(sweep_dir: Path, sw: SweepSpec, grid) -> dict[str, Any]:
    """Best trial (by its last reported metric), every trial's outcome, and the PNG."""
    out: dict[str, Any] = {"metric": sw.metric, "mode": sw.mode, "trials": []}
    if grid is None:
        return out
    histories: dict[str, Any] = {}
    best = None
    for res in grid:
        m = res.metrics or {}
        tid = m.get("trial_id") or (Path(res.path).name if res.path else "?")
        cfg = {k: (res.config or {}).get(k) for k in sw.search_space}
        row = {"trial_id": tid, "config": cfg, sw.metric: m.get(sw.metric),
               "reports": m.get("training_iteration"), "step": m.get("step"),
               "finished": m.get("finished") == 1, "error": str(res.error)[:300] if res.error else ""}
        out["trials"].append(row)
        df = res.metrics_dataframe
        if df is not None and sw.metric in getattr(df, "columns", []):
            histories[tid] = df
        v = m.get(sw.metric)
        if v is None or res.error or (isinstance(v, float) and math.isnan(v)):
            continue
        better = best is None or (v > best[0] if sw.mode == "max" else v < best[0])
        if better:
            best = (v, tid, cfg, res)
    if best is not None:
        v, tid, cfg, res = best
        ckpt = res.checkpoint.path if res.checkpoint is not None else (res.metrics or {}).get("checkpoint_path")
        out.update(best_metric=v, best_trial=tid, best_config=cfg, best_checkpoint=ckpt,
                   best_train_run_dir=(res.metrics or {}).get("train_run_dir"))
    if histories:
        out["plot"] = str(plot_trials(histories, sw.metric, sweep_dir / PLOT_FILE,
                                      {r["trial_id"] for r in out["trials"] if not r["finished"]}))
    return out


def plot_trials(histories: dict[str, Any], metric: str, path: Path, stopped=()) -> Path:
    """One line per trial: metric against the training step (or report number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tid, df in sorted(histories.items()):
        x = df["step"] if "step" in df.columns else df["training_iteration"]
        label = tid + (" (stopped early)" if tid in stopped else "")
        ax.plot(x, df[metric], marker="o", markersize=3, linestyle="--" if tid in stopped else "-",
                label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
