"""Low-rank factorization: each chosen nn.Linear(in, out) becomes Linear(in, r, bias=False)
-> Linear(r, out) from its truncated SVD (sqrt of the singular values on each factor).

    low_rank(model, ratio=0.5)        # r = half the full rank min(in, out)
    low_rank(model, energy=0.9)       # r = the smallest rank keeping 90% of sum(s^2)

`choose_rank` picks r, `factorize_linear` builds the layers.LowRankLinear, `is_low_rank`
recognizes one. A Linear where two factors would not be smaller (r (in + out) >= in out) is
kept whole, a tied weight is left out, and the notes say so.
"""

from __future__ import annotations

from orchestrator.compress.selection import left_as_is, selected, set_module, tied_weights


def is_low_rank(m) -> bool:
    from orchestrator.compress.layers import LowRankLinear

    return isinstance(m, LowRankLinear)


def choose_rank(singular_values, ratio: float | None = None, energy: float | None = None) -> int:
    """Rank for a matrix with these singular values: a fraction of full rank, or the smallest
    rank whose squared singular values keep `energy` of the total."""
    import torch

    full = len(singular_values)
    if ratio is not None:
        return max(1, min(full, int(round(ratio * full))))
    assert energy is not None
    s2 = singular_values.double() ** 2
    kept = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-30)
    target = torch.tensor(energy - 1e-12, dtype=kept.dtype)
    return max(1, min(full, int(torch.searchsorted(kept, target)) + 1))


def factorize_linear(linear, rank: int):
    """Two Linears whose product is the rank-`rank` truncated SVD of `linear` (sqrt(S) on each)."""
    import torch
    import torch.nn as nn

    w = linear.weight.detach().float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    from orchestrator.compress.layers import LowRankLinear

    dtype = linear.weight.dtype
    return LowRankLinear(first.to(dtype), second.to(dtype))


def low_rank(
    model,
    ratio: float | None = None,
    energy: float | None = None,
    layers: list[str] = (),
    exclude: list[str] = (),
) -> list[str]:
    """Replace each chosen nn.Linear, in place, by two smaller Linears; returns notes."""
    import torch
    import torch.nn as nn

    notes: list[str] = []
    tied = tied_weights(model)
    replaced = kept = 0
    skipped_tied: list[str] = []
    targets = [
        (n, m)
        for n, m in model.named_modules()
        if type(m) is nn.Linear and selected(n, list(layers), list(exclude))
    ]
    for name, lin in targets:
        if id(lin) in tied:
            skipped_tied.append(name)
            continue
        with torch.no_grad():
            s = torch.linalg.svdvals(lin.weight.detach().float())
        r = choose_rank(s, ratio, energy)
        if r * (lin.in_features + lin.out_features) >= lin.in_features * lin.out_features:
            kept += 1
            continue
        set_module(model, name, factorize_linear(lin, r))
        replaced += 1
        notes.append(f"{name}: {lin.in_features}x{lin.out_features} -> rank {r}")
    how = f"rank ratio {ratio}" if ratio is not None else f"kept energy {energy}"
    notes.insert(0, f"{replaced} Linear(s) factorized ({how})")
    if kept:
        notes.append(f"{kept} Linear(s) kept whole: at that rank two factors would not be smaller")
    if skipped_tied:
        notes.append(f"left as is, weight tied to another module: {', '.join(skipped_tied)}")
    notes += left_as_is(model, (nn.Linear,))
    return notes
