"""orchestrator.compress.spec: the `compress:` section and the flags, validated field by field."""

from __future__ import annotations

import pytest

from orchestrator.compress.spec import parse_spec
from orchestrator.errors import SpecError


def test_spec_rejects_unknown_keys_and_bad_values_naming_fields():
    with pytest.raises(SpecError) as err:
        parse_spec({"prune": 1.5, "quantise": "int8", "export": ["tflite"]})
    text = str(err.value)
    assert "compress.prune" in text and "compress.quantise" in text and "compress.export" in text
    assert "did you mean 'quantize'" in text


def test_spec_cross_field_rules():
    for bad, words in [
        ({"low_rank": 0.5, "low_rank_energy": 0.9}, "not both"),
        ({"structured": True}, "structured"),
        ({}, "nothing to do"),
        ({"finetune_steps": 10, "quantize": "int8"}, "finetune_steps"),
    ]:
        with pytest.raises(SpecError, match=words):
            parse_spec(bad)
    ok = parse_spec({"prune": 0.9, "finetune_steps": 10, "export": ["onnx"]})
    assert ok.prune == 0.9 and ok.export == ["onnx"]


def test_jobspec_validates_the_compress_section_through_this_model():
    from orchestrator.spec import validate_spec

    base = {"name": "x", "workload": "mnist_mlp"}
    with pytest.raises(SpecError, match="compress.low_rank"):
        validate_spec({**base, "compress": {"low_rank": 0}})
    spec = validate_spec({**base, "compress": {"quantize": "int8"}})
    assert spec.compress == {"quantize": "int8"}
