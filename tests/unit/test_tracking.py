"""orchestrator/tracking.py without a run: the `tracking:` section and the helpers that turn
metric rows and specs into TensorBoard/MLflow values."""

from __future__ import annotations

import pytest

from orchestrator.errors import SpecError
from orchestrator.tracking import TrackingSpec, flatten, hparams_of, numeric_items, resolve_uri


def test_tracking_spec_defaults_and_errors():
    t = TrackingSpec()
    assert t.tensorboard is True and t.mlflow is None and t.system_every_s > 0
    with pytest.raises(ValueError):
        TrackingSpec(mlflow="ftp://host/x")
    with pytest.raises(ValueError):
        TrackingSpec(tensorbord=True)


def test_tracking_section_errors_name_their_field():
    from orchestrator.spec import load_spec_text

    text = "name: x\nworkload: mnist_mlp\ntracking:\n  mlflow: ftp://nope\n  tensorbord: false\n"
    with pytest.raises(SpecError) as exc:
        load_spec_text(text)
    assert set(exc.value.paths) == {"tracking.mlflow", "tracking.tensorbord"}
    assert "did you mean 'tensorboard'" in str(exc.value)
    spec = load_spec_text("name: x\nworkload: mnist_mlp\ntracking: {mlflow: sqlite:///m.db}\n")
    assert spec.tracking["mlflow"] == "sqlite:///m.db"


def test_tracking_helpers(tmp_path):
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    hp = hparams_of({"train": {"hidden": [512, 256], "clip": None, "lr": 0.1}})
    assert hp == {"train.hidden": "[512, 256]", "train.clip": "null", "train.lr": 0.1}
    assert numeric_items({"step": 3, "loss": 1, "done": 1, "ok": True, "name": "x"}) == {
        "loss": 1.0
    }
    assert resolve_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_uri("sqlite:///m.db", tmp_path) == f"sqlite:///{tmp_path}/m.db"
    assert resolve_uri("http://h:5000") == "http://h:5000"
