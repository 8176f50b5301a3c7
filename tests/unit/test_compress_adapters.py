"""orchestrator.compress.adapters: a workload's hooks."""

from __future__ import annotations

import pytest
import torch

from orchestrator.compress.adapters import adapter_for_workload
from orchestrator.compress.spec import CompressError


def test_workload_without_hooks_is_told_what_to_add():
    import types

    mod = types.ModuleType("jobs.fake")
    with pytest.raises(CompressError, match="example_inputs"):
        adapter_for_workload("fake", mod, {})
    mod.example_inputs = lambda config, bs: (torch.zeros(bs, 3),)
    ad = adapter_for_workload("fake", mod, {})
    assert ad.example_inputs(5)[0].shape == (5, 3) and ad.evaluate is None
