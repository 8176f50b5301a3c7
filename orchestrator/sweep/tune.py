"""Ray Tune's own objects from a SweepSpec: the param space, the searcher (random, grid,
optuna, hyperopt, seeded and warm-started), the trial scheduler (ASHA, PBT; times counted in
reports), the trials' names and what Tune reserves for one trial.

Warm start (`seed_points`): the previous best configs are Tune's `points_to_evaluate`, and each
runs once. Ray 2.60 counts them inside `num_samples` for every searcher here: the
BasicVariantGenerator (random) lets each point replace one sample, and the SearchGenerator
around OptunaSearch / HyperOptSearch asks the searcher for `num_samples` configs in all, the
points first (Optuna enqueues them, HyperOpt starts its trial history with them). So a sweep of
`num_samples` N seeded with k points runs the k points once each and N - k configs of the
search algorithm's own. At most N - 1 points are seeded, so every sweep explores at least one
new config. A grid sweep takes no points: it runs every config of its grid anyway (the previous
best among them), and Tune would let one point replace a whole repeat of the grid.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from orchestrator.sweep.spec import SweepSpec

TRIAL_DRIVER_MEMORY = 2**20  # bytes reserved by each trial's driver function


def param_space(sw: SweepSpec) -> dict[str, Any]:
    return {k: d.to_tune(as_grid=sw.algorithm == "grid") for k, d in sw.search_space.items()}


def seed_points(sw: SweepSpec, points: list[dict] | None) -> list[dict[str, Any]]:
    """The warm-start points the searcher gets, in the order given (best first): none for a
    grid sweep, only points whose keys and values lie in the current search space, each once,
    and at most num_samples - 1 of them (the rest of the samples are the searcher's)."""
    if sw.algorithm == "grid" or sw.num_samples < 2:
        return []
    out: list[dict[str, Any]] = []
    for p in points or []:
        if not p or p in out:
            continue
        dims = sw.search_space
        if all(k in dims and dims[k].contains(v) for k, v in p.items()):
            out.append(dict(p))
    return out[: sw.num_samples - 1]


def search_algorithm(sw: SweepSpec, points_to_evaluate: list[dict] | None = None):
    """Ray Tune's searcher for `algorithm`, seeded once with each of `seed_points` (warm
    start); Tune counts the seeded points within num_samples."""
    points = seed_points(sw, points_to_evaluate) or None
    if sw.algorithm in ("random", "grid"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # A SearchGenerator: Tune ignores TuneConfig.max_concurrent_trials for it, so the
        # limit goes here.
        return BasicVariantGenerator(
            points_to_evaluate=points, random_state=sw.seed, max_concurrent=sw.max_concurrent
        )
    if sw.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=sw.metric, mode=sw.mode, points_to_evaluate=points, seed=sw.seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(
        metric=sw.metric, mode=sw.mode, points_to_evaluate=points, random_state_seed=sw.seed
    )


def trial_scheduler(sw: SweepSpec):
    """Ray Tune's scheduler; times are counted in reports (`training_iteration`)."""
    s = sw.scheduler
    if s.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=s.max_t,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    if s.type == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        mutations = {k: d.to_tune() for k, d in sw.search_space.items()}
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=s.quantile_fraction,
            resample_probability=s.resample_probability,
        )
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def trial_name(sweep_id: str, trial_id: str, experiment_tag: str = "") -> str:
    """`<sweep_id>-<n>-<hash>`: n counts the sweep's trials from 1 in the order Tune created
    them, hash is 5 hex digits of Tune's trial id (sweep ids are unique per storage_path; the
    hash keeps the name unique beyond it, in MLflow or TensorBoard say)."""
    m = re.fullmatch(r".+_(\d+)", trial_id)  # BasicVariantGenerator: <prefix>_<counter from 0>
    head = experiment_tag.split("_", 1)[0]  # SearchGenerator: tag <counter from 1>_<values>
    n = int(m.group(1)) + 1 if m else (int(head) if head.isdigit() else None)
    digest = hashlib.sha1(trial_id.encode()).hexdigest()[:5]
    return f"{sweep_id}-{n}-{digest}" if n is not None else f"{sweep_id}-{digest}"


@dataclass(frozen=True)
class TrialNamer:
    """Tune's trial_name_creator and trial_dirname_creator: trials carry their sweep's name
    (the ledger's run_name, Tune's trial folder and the Train run's folder trials/<name>/).
    A module-level class, so the Tuner's pickled state (Tuner.restore) can hold it."""

    sweep_id: str

    def __call__(self, trial) -> str:
        return trial_name(self.sweep_id, trial.trial_id, getattr(trial, "experiment_tag", ""))


def tune_config(
    sw: SweepSpec,
    points_to_evaluate: list[dict] | None = None,
    sweep_id: str | None = None,
    reuse_actors: bool = False,
):
    """Tune's config. `reuse_actors`: trials that train in their own process (sweep.in_process)
    keep that process for the next trial, with its imports and cached data; a trial that only
    drives a Train run gains nothing from it."""
    from ray import tune

    namer = TrialNamer(sweep_id) if sweep_id else None
    return tune.TuneConfig(
        metric=sw.metric,
        mode=sw.mode,
        num_samples=sw.num_samples,
        max_concurrent_trials=None if sw.algorithm in ("random", "grid") else sw.max_concurrent,
        search_alg=search_algorithm(sw, points_to_evaluate),
        scheduler=trial_scheduler(sw),
        time_budget_s=sw.time_budget_s,
        reuse_actors=reuse_actors,
        trial_name_creator=namer,
        trial_dirname_creator=namer,
    )


def trial_retries(sw: SweepSpec, run_restarts: int, in_process: bool) -> int:
    """Tune's `max_failures` for the sweep's trials (-1: no limit). A trial through Ray Train
    restarts its worker group `failure.max_failures` times inside the trial (a lost node),
    and only then fails and spends `sweep.max_failures`. An in-process trial has no worker
    group: its process is the worker, so the run's restarts become Tune's restarts of the
    trial, which resumes from its latest checkpoint (tune.get_checkpoint)."""
    if not in_process or run_restarts == 0:
        return sw.max_failures
    return -1 if run_restarts < 0 else sw.max_failures + run_restarts


def trial_resources(
    kind: str, workers: int, per_worker: dict[str, float], in_process: bool = False
):
    """What Tune reserves for one trial's function. A Train trial's workers reserve their own
    resources (Train v2 places them), so its function needs none: a token of memory (Tune
    wants a non-empty bundle); one that trains in its own process (`in_process`) reserves its
    one worker's CPUs. An RLlib trial builds the Algorithm in the trial actor: one bundle for
    it (the Learner) and one per remote EnvRunner (resources.workers > 1)."""
    from ray.tune import PlacementGroupFactory

    if in_process:
        return {"cpu": per_worker.get("CPU", 1.0), "memory": TRIAL_DRIVER_MEMORY}
    if kind != "rllib":
        return {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY}
    head = {"CPU": per_worker.get("CPU", 1.0)}
    if per_worker.get("GPU"):
        head["GPU"] = per_worker["GPU"]
    runners = 0 if workers <= 1 else workers
    return PlacementGroupFactory([head] + [{"CPU": per_worker.get("CPU", 1.0)}] * runners)
