"""Fuzzed bad input: every malformed spec ends in a SpecError naming a field (or a YAML error
naming line and column), never a traceback, and Ray is never started.

Hypothesis generates 1,200 malformed specs across six kinds of damage (wrong types, missing
keys, unknown keys, out-of-range numbers, huge values, broken YAML).
"""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.spec import JobSpec, load_spec_text

BASE = {
    "name": "fuzz",
    "workload": "mnist_mlp",
    "resources": {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "strategy": "ddp",
    "precision": "fp32",
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.001, "hidden": [32]},
    "checkpoint": {"every_steps": 10, "keep": 2},
    "failure": {"max_failures": 1},
    "seed": 0,
}
TOP = set(JobSpec.model_fields) | {"<yaml>", "<root>"}

INT_FIELDS = {  # path: (low, high) inclusive valid range
    ("resources", "workers"): (1, 4096),
    ("checkpoint", "every_steps"): (1, 10**9),
    ("checkpoint", "keep"): (1, 10**6),
    ("failure", "max_failures"): (-1, 10**6),
    ("seed",): (0, 2**32 - 1),
    ("train", "epochs"): (1, 10_000),
    ("train", "batch_size"): (1, 65_536),
}
FLOAT_FIELDS = {  # path: (low, low is valid, high)
    ("resources", "cpus_per_worker"): (0.0001, True, 1024),
    ("resources", "gpus_per_worker"): (0, True, 64),
    ("train", "lr"): (0, False, 10),
}
LITERALS = {("strategy",): {"ddp", "fsdp", "deepspeed", "auto"}, ("precision",): {"fp32", "bf16"}}
STR_FIELDS = [("name",), ("workload",)]
SECTIONS = [(), ("resources",), ("checkpoint",), ("failure",), ("train",)]


def _set(d, path, value):
    node = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _copy():
    return yaml.safe_load(yaml.safe_dump(BASE))


not_numbers = st.one_of(
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.text(alphabet="abc", min_size=1, max_size=3), st.integers(), min_size=1, max_size=2
    ),
)


@st.composite
def wrong_type(draw):
    d = _copy()
    kind = draw(st.sampled_from(["int", "float", "literal", "str", "section"]))
    if kind == "int":
        path = draw(st.sampled_from(sorted(INT_FIELDS)))
        _set(d, path, draw(st.one_of(not_numbers, st.floats(0.1, 0.9))))
    elif kind == "float":
        path = draw(st.sampled_from(sorted(FLOAT_FIELDS)))
        _set(d, path, draw(not_numbers))
    elif kind == "literal":
        path = draw(st.sampled_from(sorted(LITERALS)))
        value = draw(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8))
        if value in LITERALS[path]:
            value += "x"
        _set(d, path, value)
    elif kind == "str":
        path = draw(st.sampled_from(STR_FIELDS))
        _set(
            d,
            path,
            draw(st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.booleans())),
        )
    else:
        path = draw(st.sampled_from([("resources",), ("checkpoint",), ("failure",), ("train",)]))
        _set(
            d,
            path,
            draw(
                st.one_of(
                    st.integers(),
                    st.text(alphabet="xyz", min_size=1),
                    st.lists(st.integers(), min_size=1),
                )
            ),
        )
    return yaml.safe_dump(d), path[0]


@st.composite
def out_of_range(draw):
    d = _copy()
    if draw(st.booleans()):
        path = draw(st.sampled_from(sorted(INT_FIELDS)))
        lo, hi = INT_FIELDS[path]
        value = draw(st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)))
    else:
        path = draw(st.sampled_from(sorted(FLOAT_FIELDS)))
        lo, lo_valid, hi = FLOAT_FIELDS[path]
        value = draw(
            st.one_of(
                st.floats(max_value=lo, exclude_max=lo_valid, allow_nan=False),
                st.floats(min_value=hi, exclude_min=True, allow_nan=False),
            )
        )
    _set(d, path, value)
    return yaml.safe_dump(d), path[0]


@st.composite
def missing_key(draw):
    d = _copy()
    key = draw(st.sampled_from(["name", "workload"]))
    del d[key]
    return yaml.safe_dump(d), key


@st.composite
def unknown_key(draw):
    d = _copy()
    section = draw(st.sampled_from(SECTIONS))
    node = d
    for p in section:
        node = node[p]
    known = set(JobSpec.model_fields) | set(node)
    key = draw(st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=15))
    if key in known or (section == ("train",)):
        key = "zz_" + key  # never a real key anywhere
    node[key] = draw(st.one_of(st.integers(), st.text(max_size=5)))
    return yaml.safe_dump(d), (section[0] if section else key)


@st.composite
def huge(draw):
    d = _copy()
    kind = draw(st.sampled_from(["name", "int", "hidden", "deep", "list"]))
    if kind == "name":
        d["name"] = "n" * draw(st.integers(101, 100_000))
        return yaml.safe_dump(d), "name"
    if kind == "int":
        path = draw(st.sampled_from(sorted(INT_FIELDS)))
        _set(d, path, draw(st.integers(min_value=10**12, max_value=10**300)))
        return yaml.safe_dump(d), path[0]
    if kind == "hidden":
        d["train"]["hidden"] = [draw(st.integers(10**7, 10**30))]
        return yaml.safe_dump(d), "train"
    if kind == "list":
        d["train"]["hidden"] = [8] * draw(st.integers(17, 5000))
        return yaml.safe_dump(d), "train"
    depth = draw(st.integers(50, 3000))
    text = yaml.safe_dump(d) + "train2: " + "[" * depth + "]" * depth + "\n"
    return text, "train2|<yaml>|<root>"  # an unknown key, or too deep to parse


@st.composite
def broken_yaml(draw):
    text = yaml.safe_dump(BASE)
    lines = text.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    damage = draw(
        st.sampled_from(
            [
                "[unclosed",
                "{a: b",
                "key: : :",
                "\tbad: tab",
                "- list\nmapping: 1",
                "a: 'unterminated",
                "!!python/object:os.system ls",
                "&a x: *b",
                "? ? ?",
            ]
        )
    )
    lines.insert(i, damage)
    broken = "\n".join(lines)
    try:
        yaml.safe_load(broken)
    except yaml.YAMLError:
        return broken, "<yaml>"
    return None, None


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Fail loudly if anything in validation tries to start or join Ray."""
    import ray

    def refuse(*a, **k):
        raise AssertionError("spec validation must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)


def _check(text, expected_top):
    if text is None:
        return
    with pytest.raises(SpecError) as info:
        load_spec_text(text)
    err = info.value
    assert err.errors, "a SpecError names at least one problem"
    expected = set(expected_top.split("|"))
    tops = {e.path.split(".")[0] for e in err.errors}
    for e in err.errors:
        top = e.path.split(".")[0]
        assert top in TOP or top in expected, f"unexpected path {e.path!r}"
        assert e.message
    assert tops & expected, str(err)
    for e in err.errors:
        if e.path == "<yaml>":
            assert "line" in e.message and "column" in e.message, str(err)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(wrong_type())
def test_wrong_types(case):
    _check(*case)


@FUZZ
@given(out_of_range())
def test_out_of_range(case):
    _check(*case)


@FUZZ
@given(missing_key())
def test_missing_keys(case):
    _check(*case)


@FUZZ
@given(unknown_key())
def test_unknown_keys(case):
    _check(*case)


@FUZZ
@given(huge())
def test_huge_values(case):
    _check(*case)


@FUZZ
@given(broken_yaml())
def test_broken_yaml(case):
    _check(*case)
