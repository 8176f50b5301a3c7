"""Ray Tune's own objects from a SweepSpec: the param space, the searcher (random, grid,
optuna, hyperopt, seeded and warm-started), the trial scheduler (ASHA, PBT; times counted in
reports) and what Tune reserves for one trial.
"""

from __future__ import annotations

from typing import Any

from orchestrator.sweep.spec import SweepSpec

TRIAL_DRIVER_MEMORY = 2**20  # bytes reserved by each trial's driver function


def param_space(sw: SweepSpec) -> dict[str, Any]:
    return {k: d.to_tune(as_grid=sw.algorithm == "grid") for k, d in sw.search_space.items()}


def search_algorithm(sw: SweepSpec, points_to_evaluate: list[dict] | None = None):
    """Ray Tune's searcher for `algorithm`, seeded with `points_to_evaluate` (warm start)."""
    points = [p for p in (points_to_evaluate or []) if p] or None
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


def tune_config(sw: SweepSpec, points_to_evaluate: list[dict] | None = None):
    from ray import tune

    return tune.TuneConfig(
        metric=sw.metric,
        mode=sw.mode,
        num_samples=sw.num_samples,
        max_concurrent_trials=None if sw.algorithm in ("random", "grid") else sw.max_concurrent,
        search_alg=search_algorithm(sw, points_to_evaluate),
        scheduler=trial_scheduler(sw),
        time_budget_s=sw.time_budget_s,
        reuse_actors=False,
    )


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
