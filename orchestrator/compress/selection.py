"""Which modules a stage touches, and what it says about the rest.

`selected(name, layers, exclude)` applies the --layers/--exclude module-name globs;
`tied_weights(model)` finds modules sharing a weight (T5's lm_head and its embedding), which
low-rank and pruning leave out; `left_as_is(model, handled)` names each layer type with
parameters that a stage does not handle, with its count, for the stage's notes;
`set_module(model, name, new)` swaps a submodule by its dotted name.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from typing import Any


def selected(name: str, layers: list[str], exclude: list[str]) -> bool:
    if layers and not any(fnmatch.fnmatchcase(name, p) for p in layers):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def leaf_param_modules(model) -> list[tuple[str, Any]]:
    """Modules that own parameters directly (not through children)."""
    out = []
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            out.append((name, m))
    return out


def left_as_is(model, handled: tuple[type, ...], skip: set[int] = frozenset()) -> list[str]:
    """Name each layer type with parameters that a stage does not handle, with its count."""
    counts: Counter[str] = Counter()
    for _name, m in leaf_param_modules(model):
        if isinstance(m, handled) or id(m) in skip:
            continue
        counts[type(m).__name__] += 1
    if not counts:
        return []
    listed = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    return [f"left as is (this stage does not handle them): {listed}"]


def set_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def tied_weights(model) -> set[int]:
    """ids of modules whose weight is shared with another module (e.g. T5's lm_head/shared)."""
    owners: dict[int, list[Any]] = {}
    for _n, m in model.named_modules(remove_duplicate=False):
        w = m._parameters.get("weight")  # its own parameter, not a property (LowRankLinear)
        if w is not None:
            owners.setdefault(w.data_ptr(), []).append(m)
    tied = set()
    for mods in owners.values():
        if len({id(m) for m in mods}) > 1:
            tied.update(id(m) for m in mods)
    return tied
