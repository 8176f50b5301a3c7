"""orchestrator.compress.quantize: dynamic int8 and the auto mode's fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from orchestrator.compress.adapters import Adapter
from orchestrator.compress.measure import count_params, linear_weight_bytes
from orchestrator.compress.quantize import quantize_dynamic_int8, quantize_int8
from orchestrator.compress.spec import CompressError


def test_dynamic_int8_linear_weights_about_4x_smaller_and_close():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8)).eval()
    x = torch.randn(4, 256)
    q, notes = quantize_dynamic_int8(m)
    ratio = linear_weight_bytes(m) / linear_weight_bytes(q)
    assert ratio > 3.5
    assert (q(x) - m(x)).abs().max() < 0.05
    params, nonzero = count_params(q)
    assert params == sum(p.numel() for p in m.parameters())
    assert any("Linear x2" in n for n in notes)


def test_dynamic_int8_names_conv_it_cannot_handle():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    q, notes = quantize_dynamic_int8(m)
    assert isinstance(q[0], nn.Conv2d)
    assert any("Conv2d x1" in n for n in notes)
    assert q(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_auto_without_calibration_falls_back_to_dynamic_and_says_why():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    ad = Adapter(example_inputs=lambda bs: (torch.randn(bs, 1, 8, 8),))
    _q, notes, mode = quantize_int8(m, ad, "auto", 2)
    assert mode == "dynamic" and any("calibration set" in n for n in notes)
    with pytest.raises(CompressError, match="calibration"):
        quantize_int8(m, ad, "static", 2)
