"""orchestrator.compress.quantize: dynamic int8 (torchao) and the auto mode's fallback."""

from __future__ import annotations

import io
import re
from pathlib import Path

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
    assert q is not m and type(m[0].weight) is nn.Parameter  # the original stays float
    assert type(q[0].weight).__name__ == "Int8Tensor" and q[0].weight.qdata.dtype == torch.int8
    ratio = linear_weight_bytes(m) / linear_weight_bytes(q)
    assert ratio > 3.5
    assert (q(x) - m(x)).abs().max() < 0.05
    params, nonzero = count_params(q)
    assert params == sum(p.numel() for p in m.parameters())
    assert any("Linear x2" in n for n in notes)
    # the whole quantized module pickles and loads back (torch.save(model) is model.pt)
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert torch.equal(back(x), q(x))


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


def test_no_deprecated_quantization_or_torchscript_in_the_package():
    """Issue 23: torch.ao.quantization and TorchScript (torch.jit, the TorchScript-based ONNX
    exporter) are gone from orchestrator/."""
    root = Path(__file__).resolve().parents[2] / "orchestrator"
    bad = re.compile(r"torch\.ao\.|torch\.jit|dynamo=False")
    hits = [
        f"{f.relative_to(root)}:{i}"
        for f in root.rglob("*.py")
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if bad.search(line)
    ]
    assert hits == []
