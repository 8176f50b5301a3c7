"""orchestrator.compress.quantize: static int8 (torchao PT2E, x86 quantizer, calibration) of a
small conv net, which `auto` picks when the adapter gives a calibration set; the result pickles
through its torch.export program and runs compiled."""

from __future__ import annotations

import io

import torch
import torch.nn as nn

from orchestrator.compress.adapters import classifier_adapter
from orchestrator.compress.layers import ExportedInt8
from orchestrator.compress.measure import count_params, fast_module, freezing
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
    assert mode == "static" and isinstance(q, ExportedInt8)
    assert any("static int8 (PT2E" in n and "Conv2d x1, Linear x1" in n for n in notes), notes
    assert (q(x[:4]) - m(x[:4])).abs().max() < 0.2
    # int8 weights are stored, the float originals are gone (bn folded into the conv)
    int8 = [t for t in q.state_dict().values() if t.dtype == torch.int8]
    assert sorted(t.numel() for t in int8) == [36, 432]
    assert not [p for p in q.parameters() if p.dim() > 1]
    params, _ = count_params(q)
    assert params == 36 + 4 + 432 + 3  # weights (int8) and biases (float)
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert isinstance(back, ExportedInt8) and torch.equal(back(x[:5]), q(x[:5]))
    back.eval()  # train()/eval() are allowed on the exported graph
    with freezing(), torch.inference_mode():
        fast = fast_module(q)(x[:8])
    assert (fast - q(x[:8])).abs().max() < 1e-3
