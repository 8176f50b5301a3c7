"""orchestrator.compress.quantize: static int8 (FX graph mode, calibration) of a small conv
net, which `auto` picks when the adapter gives a calibration set."""

from __future__ import annotations

import torch
import torch.nn as nn

from orchestrator.compress.adapters import classifier_adapter
from orchestrator.compress.quantize import quantize_int8


def test_static_int8_for_a_conv_net_with_calibration():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 3, (64,))
    ad = classifier_adapter(x, y, x, y)
    q, notes, mode = quantize_int8(m, ad, "auto", 2)
    assert mode == "static"
    assert any("static int8" in n for n in notes)
    assert (q(x[:4]) - m(x[:4])).abs().max() < 0.2
