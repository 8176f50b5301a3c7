"""JobSpec loading, validation and overrides. No Ray."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import (
    apply_overrides,
    json_schema,
    load_spec,
    load_spec_text,
    parse_override,
)

GOOD = """
name: t
workload: mnist_mlp
resources: {workers: 2}
train: {epochs: 1}
"""


def test_shipped_mnist_spec_is_valid():
    spec = load_spec("jobs/mnist_mlp.yaml")
    assert spec.workload == "mnist_mlp"
    assert spec.resources.workers == 2
    # workload defaults are filled in
    assert spec.train["hidden"] == [512, 256]


def test_three_mistakes_reported_at_once():
    text = textwrap.dedent(
        """
        name: bad
        workload: mnist_mlp
        resources:
          workers: -1
          cpu_per_worker: 1
        train:
          lr: fast
        """
    )
    with pytest.raises(SpecError) as info:
        load_spec_text(text)
    err = info.value
    assert set(err.paths) == {"resources.workers", "resources.cpu_per_worker", "train.lr"}
    msg = str(err)
    assert "did you mean 'cpus_per_worker'" in msg
    assert "given: -1" in msg
    assert "given: 'fast'" in msg


def test_unknown_top_level_key_suggests():
    with pytest.raises(SpecError) as info:
        load_spec_text(GOOD + "checkpiont: {every_steps: 5}\n")
    assert info.value.paths == ["checkpiont"]
    assert "did you mean 'checkpoint'" in str(info.value)


def test_unknown_workload_suggests():
    with pytest.raises(SpecError) as info:
        load_spec_text(GOOD.replace("mnist_mlp", "mnist_mpl"))
    assert "workload" in info.value.paths
    assert "did you mean 'mnist_mlp'" in str(info.value)


def test_unknown_train_key_is_named():
    with pytest.raises(SpecError) as info:
        load_spec_text(GOOD, ["train.epohcs=3"])
    assert info.value.paths == ["train.epohcs"]
    assert "did you mean 'epochs'" in str(info.value)


def test_missing_required_keys():
    with pytest.raises(SpecError) as info:
        load_spec_text("resources: {workers: 1}\n")
    assert set(info.value.paths) == {"name", "workload"}


def test_yaml_error_names_line_and_column():
    with pytest.raises(SpecError) as info:
        load_spec_text("name: t\nworkload: [mnist_mlp\n")
    assert "line" in str(info.value) and "column" in str(info.value)


def test_non_mapping_root():
    with pytest.raises(SpecError) as info:
        load_spec_text("- a\n- b\n")
    assert info.value.paths == ["<root>"]


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert "not found" in str(info.value)


def test_overrides_are_yaml_typed():
    assert parse_override("train.lr=3e-4") == ("train.lr", 3e-4)
    assert parse_override("resources.workers=2") == ("resources.workers", 2)
    assert parse_override("train.hidden=[64, 32]") == ("train.hidden", [64, 32])
    assert parse_override("name=abc") == ("name", "abc")
    spec = load_spec_text(GOOD, ["train.lr=3e-4", "resources.workers=1", "train.hidden=[64]"])
    assert spec.train["lr"] == pytest.approx(3e-4)
    assert spec.resources.workers == 1
    assert spec.train["hidden"] == [64]


def test_override_without_equals_is_an_error():
    with pytest.raises(SpecError) as info:
        load_spec_text(GOOD, ["train.lr"])
    assert "dotted.key=value" in str(info.value)


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(SpecError) as info:
        apply_overrides({"name": "x"}, ["name.sub=1"])
    assert info.value.paths == ["name"]


def test_fp16_needs_gpu():
    with pytest.raises(SpecError) as info:
        load_spec_text(GOOD, ["precision=fp16"])
    assert "GPU" in str(info.value)
    spec = load_spec_text(GOOD, ["precision=fp16", "resources.gpus_per_worker=1"])
    assert spec.precision == "fp16"


def test_bad_name_is_refused():
    with pytest.raises(SpecError) as info:
        load_spec_text(GOOD, ["name=../etc"])
    assert info.value.paths == ["name"]


def test_spec_hash_is_stable_and_sensitive():
    a = load_spec_text(GOOD)
    b = load_spec_text(GOOD)
    c = load_spec_text(GOOD, ["train.lr=0.1"])
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


def test_json_schema_lists_sections():
    schema = json_schema()
    props = schema["properties"]
    for key in ("name", "workload", "resources", "strategy", "precision", "train", "checkpoint"):
        assert key in props
    json.dumps(schema)


def test_validation_does_not_import_ray():
    import subprocess

    code = (
        "import sys; from orchestrator.spec import load_spec; load_spec('jobs/mnist_mlp.yaml');"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
