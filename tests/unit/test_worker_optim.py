"""Optimizer/schedule arithmetic and the single-process Session. No Ray."""

from __future__ import annotations

import pytest

from orchestrator.worker.optim import OptimArgs, lr_factor


def test_warmup_then_cosine():
    args = OptimArgs(lr_schedule="cosine", warmup_steps=10)
    assert lr_factor(0, args, 110) == pytest.approx(0.1)
    assert lr_factor(9, args, 110) == pytest.approx(1.0)
    assert lr_factor(10, args, 110) == pytest.approx(1.0)
    assert lr_factor(60, args, 110) == pytest.approx(0.5)
    assert lr_factor(110, args, 110) == pytest.approx(0.0, abs=1e-9)


def test_linear_and_constant():
    lin = OptimArgs(lr_schedule="linear")
    assert lr_factor(50, lin, 100) == pytest.approx(0.5)
    assert lr_factor(5, OptimArgs(), 100) == 1.0


def test_optim_args_refuse_bad_values():
    with pytest.raises(ValueError):
        OptimArgs(lr=-1)
    with pytest.raises(ValueError):
        OptimArgs(optimizer="lbfgs")
    with pytest.raises(ValueError):
        OptimArgs(grad_accum=0)
