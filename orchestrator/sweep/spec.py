"""The spec's `sweep:` section, checked against the spec and its workload, and the trial specs
it makes.

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

The sweep directory `<storage_path>/<sweep_id>/` holds Tune's experiment state,
`trials/<trial_id>/` (each trial's Train run), `sweep.json` (what ran), `best.json` and
`metric.png` (orchestrator/sweep/driver.py).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.errors import ExitCode, FieldError, OrchestratorError, SpecError

SWEEP_FILE = "sweep.json"
BEST_FILE = "best.json"
PLOT_FILE = "metric.png"
TRIALS_DIR = "trials"
# Keys a sweep may not vary: they name or place the job, or configure the sweep itself.
FIXED_KEYS = ("name", "workload", "storage_path", "sweep", "schedule", "resources")


class SweepError(OrchestratorError):
    """A sweep cannot start or resume (nothing to resume, a trial failed, ...)."""

    exit_code = ExitCode.FAILED


class SweepInputError(SweepError):
    """A sweep's command-line options do not go together."""

    exit_code = ExitCode.BAD_INPUT


class SweepNotFoundError(SweepError):
    """No sweep to resume, or not a sweep directory."""

    exit_code = ExitCode.NOT_FOUND


class SweepExistsError(SweepError):
    """A sweep of that id exists already."""

    exit_code = ExitCode.CONFLICT


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
                hint = (
                    f"did you mean '{guess[0]}'?"
                    if guess
                    else f"expected one of {', '.join(DIM_KINDS)}"
                )
                raise ValueError(f"unknown distribution '{unknown[0]}'; {hint}")
        elif not isinstance(v, Dim):
            raise ValueError(
                "expected a mapping with one of "
                + ", ".join(DIM_KINDS)
                + " (e.g. {loguniform: [1.0e-4, 1.0e-1]})"
            )
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> Dim:
        set_ = [
            k
            for k in ("choice", "grid", "uniform", "loguniform", "randint")
            if getattr(self, k) is not None
        ]
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
        return next(
            k
            for k in ("choice", "grid", "uniform", "loguniform", "randint")
            if getattr(self, k) is not None
        )

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def sample_value(self) -> Any:
        """A representative value (for checking the key against the spec)."""
        a = self.args
        return (
            a[0]
            if self.kind in ("choice", "grid", "randint")
            else (math.sqrt(a[0] * a[1]) if self.kind == "loguniform" else (a[0] + a[1]) / 2)
        )

    def contains(self, value: Any) -> bool:
        """Whether `value` lies in this dimension (a warm-start point from an earlier sweep
        may not, once the space has changed)."""
        kind, a = self.kind, self.args
        if kind in ("choice", "grid"):
            return value in list(a)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if kind == "randint":
            return float(value).is_integer() and a[0] <= value < a[1]
        return a[0] <= value <= a[1]

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
    grace_period: int = Field(
        1, ge=1, le=10**9, description="ASHA: reports before a trial can stop."
    )
    reduction_factor: float = Field(2.0, gt=1, le=100, description="ASHA: keep 1/rf at each rung.")
    # PBT (ray.tune.schedulers.PopulationBasedTraining)
    perturbation_interval: int = Field(
        2, ge=1, le=10**9, description="PBT: reports between exploits."
    )
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
    search_space: dict[str, Dim] = Field(
        ..., min_length=1, description="Dotted spec key -> distribution."
    )
    num_samples: int = Field(4, ge=1, le=100_000, description="Trials (grid: repeats of the grid).")
    max_concurrent: int = Field(1, ge=1, le=10_000, description="Trials running at once.")
    algorithm: Literal["random", "grid", "optuna", "hyperopt"] = "random"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: TrialResources | None = Field(
        None, description="Per trial; default: spec resources."
    )
    report_every: int | None = Field(
        None, ge=1, le=10**9, description="Steps between reports; default train.log_every."
    )
    max_failures: int = Field(0, ge=0, le=1000, description="Retries of a failed trial.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Searcher seed.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop the whole sweep after this.")
    in_process: bool = Field(
        True,
        description=(
            "Run a trial of one CPU worker (strategy ddp) in the Tune trial's own process, "
            "reused by the next trial, instead of a Ray Train run of its own (a controller "
            "and a worker process per trial); false: every trial through Ray Train."
        ),
    )

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
                if (
                    isinstance(val, dict)
                    and val
                    and not (set(val) & set(DIM_KINDS))
                    and all(isinstance(x, dict) for x in val.values())
                ):
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
                    f"'{key}': {parts[0]} cannot be swept "
                    "(use sweep.resources for per-trial resources)"
                    if parts[0] == "resources"
                    else f"'{key}': {parts[0]} cannot be swept"
                )
        return v

    @model_validator(mode="after")
    def _algorithm_fits_space(self) -> SweepSpec:
        kinds = {k: d.kind for k, d in self.search_space.items()}
        if self.algorithm == "grid":
            cont = [k for k, kind in kinds.items() if kind not in ("choice", "grid")]
            if cont:
                raise ValueError(
                    f"algorithm grid needs choice/grid dimensions only; {', '.join(cont)} "
                    "is continuous (use algorithm random, optuna or hyperopt)"
                )
        if self.algorithm in ("optuna", "hyperopt"):
            grids = [k for k, kind in kinds.items() if kind == "grid"]
            if grids:
                raise ValueError(
                    f"algorithm {self.algorithm} cannot take grid dimensions ({', '.join(grids)}); "
                    "use choice"
                )
        if self.scheduler.type == "pbt" and self.algorithm != "random":
            raise ValueError("scheduler pbt explores by itself; use algorithm random")
        return self


def validate_sweep(spec) -> SweepSpec:
    """The spec's sweep section, with every search key checked against the spec and workload."""
    from pydantic import ValidationError

    from orchestrator.spec import pydantic_errors, validate_spec

    if not spec.sweep:
        raise SpecError(
            [
                FieldError(
                    "sweep",
                    "this spec has no sweep: section; add one "
                    "(see docs/sweeps.md) to run orch sweep",
                )
            ]
        )
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
                errors.append(
                    FieldError(f"sweep.search_space.{key}", f"{e.path}: {e.message}", e.given)
                )
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


def trial_spec_dict(
    base: dict[str, Any], values: dict[str, Any], sw: SweepSpec, storage: str, run_name: str
) -> dict[str, Any]:
    d = base
    for key, value in values.items():
        d = set_dotted(d, key, value)
    if sw.resources is not None:
        d["resources"] = {**d.get("resources", {}), **sw.resources.model_dump()}
    d["storage_path"] = storage
    d["name"] = run_name
    if (
        sw.report_every is not None
        and isinstance(d.get("train"), dict)
        and "log_every" in d["train"]
    ):
        d["train"]["log_every"] = sw.report_every
    if sw.scheduler.type == "pbt":
        # PBT clones checkpoints: make every report carry one.
        every = (d.get("train") or {}).get("log_every") or sw.report_every or 10
        d.setdefault("checkpoint", {})["every_steps"] = int(every)
    return d


# Keys whose sweeping changes how a trial is wrapped: such a sweep's trials run through Train.
_WRAPPING_KEYS = ("strategy", "deepspeed", "fsdp", "pipeline")


def in_process_reason(sw: SweepSpec, spec, kind: str, queued: bool = False) -> str | None:
    """None when each trial of this sweep runs its loop in the Tune trial's own process, else
    why it goes through Ray Train (a controller and its worker group per trial). A queued
    sweep's trials go through Train: an in-process trial would hold its CPUs in Ray while it
    waits for the queue to admit it, and the queue would count them as free."""
    from orchestrator import workloads

    workers, per = trial_request(sw, spec)
    if not sw.in_process:
        return "sweep.in_process is false"
    if queued:
        return "the sweep runs through the queue, which admits each trial's workers"
    if kind != "train" or spec.workload == workloads.SCRIPT:
        return f"workload {spec.workload} is not a train_loop module"
    if workers != 1 or per.get("GPU"):
        return f"a trial has {workers} worker(s){' with a GPU' if per.get('GPU') else ''}"
    if spec.strategy != "ddp":
        return f"strategy {spec.strategy}"
    swept = [k for k in sw.search_space if k.split(".")[0] in _WRAPPING_KEYS]
    if swept:
        return f"{', '.join(swept)} is swept"
    return None


def trial_request(sw: SweepSpec, spec) -> tuple[int, dict[str, float]]:
    """(workers, resources per worker) of one trial."""
    from orchestrator.spec import per_worker

    r = sw.resources or spec.resources
    return int(r.workers), per_worker(r)
