"""A small model and a classifier adapter for the orchestrator.compress tests
(tests/unit/test_compress_*.py, tests/integration/test_compress_*.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from orchestrator.compress.adapters import Adapter, classifier_adapter


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)
    )


def toy_adapter(seed: int = 0) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=g)
    y = x[:, :4].argmax(1)
    return classifier_adapter(x[:192], y[:192], x[192:], y[192:])
