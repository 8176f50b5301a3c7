"""Warm start and trial names on Ray Tune's own objects, without a Ray cluster: the searcher
that tune_config builds is asked for its trials as Tune's controller would ask it
(add_configurations, then next_trial until it has none)."""

from __future__ import annotations

import importlib.util
import pickle

import pytest

from orchestrator.sweep.schedule import fire_seed
from orchestrator.sweep.spec import SweepSpec
from orchestrator.sweep.tune import TrialNamer, param_space, seed_points, trial_name, tune_config

pytest.importorskip("ray.tune")

SPACE = {"train.lr": {"loguniform": [1e-4, 1e-1]}, "train.batch_size": {"choice": [32, 64, 128]}}


def sweep(algorithm="random", num_samples=4, seed=0, space=None, **kw) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "metric": "accuracy",
            "mode": "max",
            "num_samples": num_samples,
            "algorithm": algorithm,
            "seed": seed,
            "search_space": space or SPACE,
            **kw,
        }
    )


def trials(sw: SweepSpec, points=None, sweep_id="sw"):
    """The trials Tune would run for this sweep (run_sweep's tune_config), in order."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import Searcher, SearchGenerator

    cfg = tune_config(sw, points, sweep_id)
    alg = cfg.search_alg
    if isinstance(alg, Searcher):  # as ray.tune.tune.run wraps it
        assert alg.set_search_properties(cfg.metric, cfg.mode, param_space(sw))
        alg = SearchGenerator(alg)
    exp = Experiment(
        "x",
        _noop,
        config=param_space(sw),
        num_samples=cfg.num_samples,
        trial_name_creator=cfg.trial_name_creator,
        trial_dirname_creator=cfg.trial_dirname_creator,
    )
    alg.add_configurations([exp])
    out = []
    for i in range(10 * sw.num_samples + 50):
        t = alg.next_trial()
        if t is None:
            if alg.is_finished():
                break
            continue
        out.append(t)
        alg.on_trial_complete(t.trial_id, result={"accuracy": 0.1 * (i % 7), "done": True})
    return out


def _noop(config):
    pass


def configs(ts):
    return [{k: t.config[k] for k in SPACE} for t in ts]


def _needs(module: str):
    missing = importlib.util.find_spec(module) is None
    return pytest.mark.skipif(missing, reason=f"{module} not installed ([tune-search] extra)")


ALGORITHMS = [
    "random",
    pytest.param("optuna", marks=_needs("optuna")),
    pytest.param("hyperopt", marks=_needs("hyperopt")),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_seed_runs_once_and_the_other_samples_are_the_searchers(algorithm):
    champion = {"train.lr": 0.0123, "train.batch_size": 64}
    runner_up = {"train.lr": 0.0456, "train.batch_size": 128}
    sw = sweep(algorithm, num_samples=5)
    got = configs(trials(sw, [champion, runner_up]))
    assert len(got) == 5  # num_samples in all: the seeds count within it
    assert got[:2] == [champion, runner_up]
    free = got[2:]
    assert champion not in free and runner_up not in free
    assert len({c["train.lr"] for c in free}) == 3  # three configs of the searcher's own


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_two_sample_fire_runs_the_champion_once_and_one_new_config(algorithm):
    """The bug of issue 23: with one sweep.seed for every fire, the searcher drew the same
    configs each fire, so a 2-sample fire seeded with the champion drew it again. Each fire's
    searcher now has its own seed (fire_seed)."""
    sw1 = sweep(algorithm, num_samples=2, seed=fire_seed(0, "nightly-20250101-030000"))
    first = configs(trials(sw1))
    champion = first[0]
    sw2 = sweep(algorithm, num_samples=2, seed=fire_seed(0, "nightly-20250102-030000"))
    second = configs(trials(sw2, [champion, first[1]]))  # warm_start: 2, capped at 1
    assert second[0] == champion
    assert second[1] not in first and len(second) == 2


def test_seed_points_rules():
    a, b, c = ({"train.lr": v, "train.batch_size": 32} for v in (0.001, 0.002, 0.003))
    assert seed_points(sweep(num_samples=4), [a, b, a, {}, c]) == [a, b, c]
    assert seed_points(sweep(num_samples=3), [a, b, c]) == [a, b]  # num_samples - 1 at most
    assert seed_points(sweep(num_samples=1), [a]) == []  # the one sample is the searcher's
    outside = [
        {"train.lr": 0.5, "train.batch_size": 32},  # above the loguniform's high
        {"train.lr": 0.01, "train.batch_size": 48},  # not one of the choices
    ]
    assert seed_points(sweep(), outside + [{"train.lr": 0.01, "other": 1}, a]) == [a]
    grid = sweep("grid", space={"train.lr": {"grid": [0.1, 0.01]}}, num_samples=3)
    assert seed_points(grid, [{"train.lr": 0.1}]) == []


def test_grid_sweep_runs_its_whole_grid_whatever_the_warm_start():
    # Tune would let the point replace one repeat of the grid: 0.01 once, then one grid.
    sw = sweep("grid", space={"train.lr": {"grid": [0.1, 0.01, 0.001]}}, num_samples=2)
    got = [t.config["train.lr"] for t in trials(sw, [{"train.lr": 0.01}])]
    assert got == [0.1, 0.01, 0.001] * 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_trials_are_named_after_their_sweep(algorithm):
    ts = trials(sweep(algorithm, num_samples=3), sweep_id="lr-sweep-20250101-030000")
    names = [str(t) for t in ts]
    assert [n.rsplit("-", 2)[0] for n in names] == ["lr-sweep-20250101-030000"] * 3
    assert [n.rsplit("-", 2)[1] for n in names] == ["1", "2", "3"]  # creation order, from 1
    assert len(set(names)) == 3
    assert all(t.custom_dirname == str(t) for t in ts)  # Tune's trial folder too


def test_trial_name_forms_and_pickling():
    # BasicVariantGenerator ids count from 0; SearchGenerator ids are hex, the tag counts from 1
    assert trial_name("s", "a1b2c_00000").startswith("s-1-")
    assert trial_name("s", "3f2a9b1c", "4_train.lr=0.1").startswith("s-4-")
    assert trial_name("s", "a1b2c_00000") != trial_name("s", "a1b2d_00000")
    assert len(trial_name("s", "weird").split("-")) == 2  # no counter: sweep and hash
    namer = pickle.loads(pickle.dumps(TrialNamer("s")))  # Tuner.restore unpickles it
    assert namer == TrialNamer("s")


def test_fire_seed_is_per_fire_and_reproducible():
    a, b = fire_seed(0, "n-20250101-030000"), fire_seed(0, "n-20250102-030000")
    assert a != b and a == fire_seed(0, "n-20250101-030000")
    assert fire_seed(1, "n-20250101-030000") != a
    assert 0 <= a < 2**32
    SweepSpec.model_validate({**sweep().model_dump(), "seed": a})  # a valid sweep.seed
