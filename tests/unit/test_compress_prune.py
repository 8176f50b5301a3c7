"""orchestrator.compress.prune on a tiny MLP: global and structured pruning, chain compaction."""

from __future__ import annotations

import torch
import torch.nn as nn

from orchestrator.compress.prune import compact_sequential_chains, prune_model
from tests.unit.compress_fixtures import mlp


def test_global_unstructured_prune_is_permanent_and_hits_the_fraction():
    m = mlp()
    weights = sum(lin.weight.numel() for lin in m if isinstance(lin, nn.Linear))
    notes, pruned = prune_model(m, 0.75)
    zeros = sum(int((lin.weight == 0).sum()) for lin in m if isinstance(lin, nn.Linear))
    assert zeros == round(0.75 * weights)
    assert not any(hasattr(lin, "weight_mask") or lin._forward_pre_hooks for lin in m)
    assert all("weight_orig" not in k for k in m.state_dict())
    assert len(pruned) == 3 and "global L1" in notes[0]


def test_structured_prune_removes_neurons_and_keeps_the_function():
    m = mlp()
    x = torch.randn(8, 20)
    notes, _ = prune_model(m, 0.5, structured=True)
    # hidden layers shrank for real; the output layer kept its 4 outputs
    assert m[0].out_features == 16 and m[2].in_features == 16
    assert m[2].out_features == 8 and m[4].in_features == 8 and m[4].out_features == 4
    assert any("output layer" in n for n in notes)
    assert m(x).shape == (8, 4)


def test_compaction_is_exact():
    m = mlp()
    with torch.no_grad():
        m[0].weight[:5] = 0
        m[0].bias[:5] = 0
    x = torch.randn(8, 20)
    before = m(x)
    removed, _ = compact_sequential_chains(m)
    assert removed == 5 and m[0].out_features == 27 and m[2].in_features == 27
    assert torch.allclose(m(x), before, atol=1e-6)


def test_prune_names_layer_types_it_leaves():
    m = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    notes, _ = prune_model(m, 0.5)
    assert any("Embedding x1" in n and "LayerNorm x1" in n for n in notes)
    assert isinstance(m[0], nn.Embedding) and isinstance(m[1], nn.LayerNorm)
