"""orchestrator.compress.lowrank: rank choice, SVD factors, which Linears it replaces."""

from __future__ import annotations

import torch
import torch.nn as nn

from orchestrator.compress.lowrank import choose_rank, factorize_linear, is_low_rank, low_rank
from tests.unit.compress_fixtures import mlp


def test_choose_rank_by_ratio_and_energy():
    s = torch.tensor([10.0, 5.0, 1.0, 0.1])
    assert choose_rank(s, ratio=0.5) == 2
    # squared: 100, 25, 1, 0.01 of 126.01 -> cumulative 0.794, 0.992, 0.99992, 1
    assert choose_rank(s, energy=0.5) == 1
    assert choose_rank(s, energy=0.99) == 2
    assert choose_rank(s, energy=0.995) == 3
    assert choose_rank(s, energy=1.0) == 4


def test_factorization_is_two_smaller_linears_equal_to_the_truncated_svd():
    torch.manual_seed(0)
    lin = nn.Linear(40, 30)
    f = factorize_linear(lin, 10)
    assert [type(c) for c in f] == [nn.Linear, nn.Linear]
    assert f[0].weight.shape == (10, 40) and f[1].weight.shape == (30, 10) and f[0].bias is None
    u, s, vh = torch.linalg.svd(lin.weight.detach())
    best = (u[:, :10] * s[:10]) @ vh[:10]
    assert torch.allclose(f[1].weight @ f[0].weight, best, atol=1e-5)
    x = torch.randn(5, 40)
    assert torch.allclose(f(x), x @ best.T + lin.bias, atol=1e-5)
    full = factorize_linear(lin, 30)
    assert torch.allclose(full(x), lin(x), atol=1e-5)


def test_low_rank_shrinks_params_and_keeps_layers_that_would_grow():
    m = mlp()
    before = sum(p.numel() for p in m.parameters())
    notes = low_rank(m, ratio=0.5)
    after = sum(p.numel() for p in m.parameters())
    assert after < before
    assert is_low_rank(m[0]) and m[0].rank == 10  # 20x32 at rank 10: 520 < 640 weights
    assert is_low_rank(m[4]) and m[4].rank == 2  # 16x4 at rank 2: 40 < 64
    assert notes[0] == "3 Linear(s) factorized (rank ratio 0.5)"
    assert m(torch.randn(3, 20)).shape == (3, 4)
    m = mlp()
    notes = low_rank(m, ratio=0.9)  # rank 18 of 20x32: 936 > 640 weights
    assert isinstance(m[0], nn.Linear) and any("kept whole" in n for n in notes)


def test_low_rank_skips_excluded_and_tied():
    m = mlp()
    low_rank(m, ratio=0.25, exclude=["2"])
    assert isinstance(m[2], nn.Linear) and is_low_rank(m[0])
    emb = nn.Embedding(12, 8)
    head = nn.Linear(8, 12, bias=False)
    head.weight = emb.weight
    tied = nn.ModuleDict({"emb": emb, "head": head})
    notes = low_rank(tied, ratio=0.25)
    assert tied["head"] is head and any("tied" in n and "head" in n for n in notes)
