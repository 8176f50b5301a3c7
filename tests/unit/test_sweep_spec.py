"""The `sweep:` section: what it accepts, what it refuses (naming the field), and the trial
specs it produces. No Ray is started; Tune objects are only built where noted."""

from __future__ import annotations

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import load_spec_text
from orchestrator.sweep.spec import (
    SweepSpec,
    set_dotted,
    trial_base,
    trial_spec_dict,
    validate_sweep,
)

BASE = """
name: s
workload: mnist_mlp
train: {epochs: 1, max_steps: 20, log_every: 5}
sweep:
  metric: accuracy
  mode: max
  num_samples: 4
  max_concurrent: 2
  search_space:
    train.lr: {loguniform: [1.0e-4, 1.0e-1]}
"""


def spec_with(*overrides: str):
    return load_spec_text(BASE, list(overrides))


def sweep_errors(**section) -> list[str]:
    data = {
        "metric": "accuracy",
        "mode": "max",
        "search_space": {"train.lr": {"loguniform": [1e-4, 1e-1]}},
        **section,
    }
    with pytest.raises(ValueError) as exc:
        SweepSpec.model_validate(data)
    return [str(e) for e in exc.value.errors()]


def test_minimal_section_and_defaults():
    sw = validate_sweep(spec_with())
    assert sw.algorithm == "random" and sw.scheduler.type == "none"
    assert sw.search_space["train.lr"].kind == "loguniform"
    assert sw.num_samples == 4 and sw.max_concurrent == 2


def test_every_distribution_kind():
    sw = SweepSpec.model_validate(
        {
            "metric": "loss",
            "mode": "min",
            "search_space": {
                "train.lr": {"loguniform": [1e-4, 1e-1]},
                "train.weight_decay": {"uniform": [0.0, 0.1]},
                "train.batch_size": {"choice": [32, 64]},
                "train.hidden": {"grid": [[64], [128, 64]]},
                "seed": {"randint": [0, 10]},
            },
        }
    )
    assert {k: d.kind for k, d in sw.search_space.items()} == {
        "train.lr": "loguniform",
        "train.weight_decay": "uniform",
        "train.batch_size": "choice",
        "train.hidden": "grid",
        "seed": "randint",
    }


def test_nested_sections_mean_dotted_keys():
    spec = spec_with("sweep.search_space.train.batch_size.choice=[16, 32]")
    sw = validate_sweep(spec)
    assert set(sw.search_space) == {"train.lr", "train.batch_size"}


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"search_space": {"train.lr": {"loguniform": [0.0, 1.0]}}}, "low > 0"),
        ({"search_space": {"train.lr": {"uniform": [1.0, 0.5]}}}, "low < high"),
        ({"search_space": {"train.lr": {"unifrom": [0.1, 0.5]}}}, "did you mean 'uniform'"),
        ({"search_space": {"train.lr": {"choice": [1], "grid": [2]}}}, "exactly one"),
        ({"search_space": {"train.lr": [1, 2]}}, "expected a mapping"),
        ({"search_space": {"name": {"choice": ["a", "b"]}}}, "name cannot be swept"),
        ({"search_space": {"resources.workers": {"choice": [1, 2]}}}, "sweep.resources"),
        ({"algorithm": "grid"}, "algorithm grid needs choice/grid"),
        ({"algorithm": "optuna", "search_space": {"train.lr": {"grid": [0.1, 0.2]}}}, "use choice"),
        ({"scheduler": {"type": "asha", "grace_period": 5, "max_t": 2}}, "grace_period"),
        ({"scheduler": "pbt", "algorithm": "hyperopt"}, "use algorithm random"),
    ],
)
def test_bad_sections_say_what_is_wrong(section, expected):
    assert any(expected in e for e in sweep_errors(**section)), sweep_errors(**section)


def test_errors_name_the_field_through_the_spec():
    with pytest.raises(SpecError) as exc:
        spec_with("sweep.mode=maximise", "sweep.num_samples=0", "sweep.algorithm=bayes")
    assert {"sweep.mode", "sweep.num_samples", "sweep.algorithm"} <= set(exc.value.paths)


def test_search_keys_are_checked_against_the_workload():
    spec = spec_with("sweep.search_space.train.lrr.choice=[0.1]")
    with pytest.raises(SpecError) as exc:
        validate_sweep(spec)
    assert exc.value.paths == ["sweep.search_space.train.lrr"]
    assert "did you mean 'lr'" in str(exc.value)
    spec = spec_with("sweep.search_space.train.batch_size.choice=[0]")  # Args: ge=1
    with pytest.raises(SpecError, match="sweep.search_space.train.batch_size"):
        validate_sweep(spec)


def test_spec_without_sweep_section_is_refused():
    spec = load_spec_text("name: s\nworkload: mnist_mlp\n")
    with pytest.raises(SpecError, match="no sweep: section"):
        validate_sweep(spec)


def test_set_dotted_copies_and_creates_sections():
    d = {"train": {"lr": 1}}
    out = set_dotted(d, "train.lr", 2)
    assert out == {"train": {"lr": 2}} and d == {"train": {"lr": 1}}
    assert set_dotted({}, "data.path", "/x") == {"data": {"path": "/x"}}


def test_trial_spec_applies_values_resources_and_report_every():
    spec = spec_with("sweep.resources.workers=1", "sweep.report_every=2", "resources.workers=2")
    sw = validate_sweep(spec)
    d = trial_spec_dict(trial_base(spec), {"train.lr": 0.01}, sw, "/abs/trials", "abc_00001")
    assert d["train"]["lr"] == 0.01 and d["train"]["log_every"] == 2
    assert d["resources"]["workers"] == 1
    assert d["storage_path"] == "/abs/trials" and d["name"] == "abc_00001"
    assert "sweep" not in d and "schedule" not in d


def test_pbt_makes_every_report_carry_a_checkpoint():
    spec = spec_with("sweep.scheduler=pbt", "sweep.report_every=4")
    sw = validate_sweep(spec)
    d = trial_spec_dict(trial_base(spec), {}, sw, "/t", "x")
    assert d["checkpoint"]["every_steps"] == 4 == d["train"]["log_every"]
