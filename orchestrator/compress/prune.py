"""Pruning, made permanent (the saved model holds plain weights with zeros, no masks).

    prune_model(model, 0.9)                      # global L1 over every chosen Linear/Conv weight
    prune_model(model, 0.5, structured=True)     # per layer, output neurons/channels by L1 norm

Structured pruning zeroes whole neurons/channels (never the model's output layer) and then
`compact_sequential_chains` removes them for real where an nn.Sequential chain
Linear -> (ReLU/GELU/Dropout/...) -> Linear lets it: a zeroed neuron outputs 0, so dropping
its row and the next layer's matching column is exact. `prune_model` returns the (module,
parameter) pairs it pruned, which fine-tuning keeps at zero.
"""

from __future__ import annotations

from typing import Any

from orchestrator.compress.lowrank import is_low_rank
from orchestrator.compress.selection import left_as_is, selected, tied_weights
from orchestrator.compress.spec import CompressInputError


def _prunable_types():
    import torch.nn as nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _output_layer(model):
    """The last Linear/Conv registered: the model's output layer in the usual layouts."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, _prunable_types()):
            last = (name, m)
    return last


def prune_model(
    model, amount: float, structured: bool = False, layers: list[str] = (), exclude: list[str] = ()
) -> tuple[list[str], list[tuple[Any, str]]]:
    """Prune in place and make it permanent (no masks or hooks remain).

    Unstructured: global L1 magnitude over every chosen Linear/Conv weight together.
    Structured: per layer, the `amount` of output neurons/channels with the smallest L1 norm
    are zeroed (weights and bias) and, where a Sequential chain lets us, removed for real.
    Returns (notes, [(module, param_name)] that were pruned: fine-tuning keeps their zeros).
    """
    import torch.nn.utils.prune as prune

    notes: list[str] = []
    tied = tied_weights(model)
    chosen = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, _prunable_types()) and selected(n, list(layers), list(exclude))
    ]
    tied_names = [n for n, m in chosen if id(m) in tied]
    chosen = [(n, m) for n, m in chosen if id(m) not in tied]
    if tied_names:
        notes.append(f"left as is, weight tied to another module: {', '.join(tied_names)}")
    if not chosen:
        raise CompressInputError("prune: no Linear/Conv layer matched compress.layers/exclude")
    pruned: list[tuple[Any, str]] = []
    if not structured:
        params = [(m, "weight") for _n, m in chosen]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        for m, p in params:
            prune.remove(m, p)
        pruned = params
        notes.append(f"global L1 unstructured, {amount:.0%} of the weights of {len(chosen)} layers")
    else:
        out = _output_layer(model)
        if out is not None and any(m is out[1] for _n, m in chosen):
            chosen = [(n, m) for n, m in chosen if m is not out[1]]
            notes.append(
                f"kept {out[0]} whole: it is the output layer (its neurons are the outputs)"
            )
        for _n, m in chosen:
            prune.ln_structured(m, "weight", amount=amount, n=1, dim=0)
            keep = m.weight_mask.flatten(1).any(1)
            prune.remove(m, "weight")
            pruned.append((m, "weight"))
            if m.bias is not None:
                prune.custom_from_mask(m, "bias", keep.to(m.bias.dtype))
                prune.remove(m, "bias")
                pruned.append((m, "bias"))
        notes.append(
            f"structured L1, {amount:.0%} of the output neurons/channels of {len(chosen)} layers"
        )
        _removed, remarks = compact_sequential_chains(model)
        notes += remarks
        # compaction built new Linears; fine-tuning masks whatever holds zeros among them all
        pruned = _modules_params(model)
    notes += left_as_is(model, _prunable_types())
    return notes, pruned


def _modules_params(model) -> list[tuple[Any, str]]:
    out = []
    for m in model.modules():
        if isinstance(m, _prunable_types()):
            out.append((m, "weight"))
            if m.bias is not None:
                out.append((m, "bias"))
    return out


_ZERO_PRESERVING = (
    "ReLU",
    "ReLU6",
    "GELU",
    "SiLU",
    "Tanh",
    "LeakyReLU",
    "ELU",
    "Hardswish",
    "Hardtanh",
    "Mish",
    "Dropout",
    "Identity",
    "Softsign",
    "Tanhshrink",
)


def _ends(block):
    """(first Linear, last Linear) of a Linear or a LowRankLinear, else None."""
    import torch.nn as nn

    if type(block) is nn.Linear:
        return block, block
    if is_low_rank(block):
        return block[0], block[1]
    return None


def compact_sequential_chains(model) -> tuple[int, list[str]]:
    """Remove all-zero neurons between Linears of an nn.Sequential for real.

    Inside a Sequential, Linear A -> (ReLU/GELU/Dropout/... with f(0) = 0) -> Linear B: a
    neuron of A whose weights and bias are all zero outputs 0, so dropping A's row and B's
    matching column computes the same function with fewer parameters.
    Returns (neurons removed, notes); layers outside such chains keep their zeroed rows.
    """
    import torch
    import torch.nn as nn

    removed = 0
    notes = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or is_low_rank(seq):
            continue
        children = list(seq.children())
        i = 0
        while i < len(children):
            ends_a = _ends(children[i])
            if ends_a is None:
                i += 1
                continue
            j = i + 1
            while j < len(children) and type(children[j]).__name__ in _ZERO_PRESERVING:
                j += 1
            ends_b = _ends(children[j]) if j < len(children) else None
            if ends_b is None:
                i = j
                continue
            a, b = ends_a[1], ends_b[0]
            rows = a.weight.detach().abs().sum(1) != 0
            if a.bias is not None:
                rows |= a.bias.detach() != 0
            n_drop = int((~rows).sum())
            if 0 < n_drop < len(rows):
                keep = rows.nonzero().flatten()
                new_a = nn.Linear(a.in_features, len(keep), bias=a.bias is not None)
                new_b = nn.Linear(len(keep), b.out_features, bias=b.bias is not None)
                with torch.no_grad():
                    new_a.weight.copy_(a.weight[keep])
                    if a.bias is not None:
                        new_a.bias.copy_(a.bias[keep])
                    new_b.weight.copy_(b.weight[:, keep])
                    if b.bias is not None:
                        new_b.bias.copy_(b.bias)
                _replace_end(children, i, a, new_a)
                _replace_end(children, j, b, new_b)
                removed += n_drop
                where = f"{seq_name}." if seq_name else ""
                notes.append(
                    f"{where}{i}: removed {n_drop} of {len(rows)} neurons (and the "
                    f"matching inputs of {where}{j})"
                )
            i = j
        for k, child in enumerate(children):
            seq[k] = child
    if not notes:
        notes.append("zeroed neurons/channels stay in place (no Linear -> Linear chain to shrink)")
    return removed, notes


def _replace_end(children: list, idx: int, old, new) -> None:
    block = children[idx]
    if block is old:
        children[idx] = new
        return
    # a LowRankLinear: swap the factor in place, keep its bookkeeping right
    for k in (0, 1):
        if block[k] is old:
            block[k] = new
    block.in_features, block.out_features = block[0].in_features, block[1].out_features
    block.rank = block[0].out_features
