"""The layer compress puts into models: `LowRankLinear` (a Linear as two smaller factors).

It imports torch at module level (an nn.Module subclass must), so the rest of the package
imports it only inside functions. It lives at module level, apart from the code that builds it,
so that a compressed model pickles (torch.save(model)) and loads back (torch.load(path,
weights_only=False)) with nothing but torch and this module imported.
"""

from __future__ import annotations

import torch.nn as nn


class LowRankLinear(nn.Sequential):
    """A Linear(in, out) replaced by Linear(in, rank, bias=False) -> Linear(rank, out).

    `weight` is the second factor (shape out x rank): it is there for code that inspects
    `.weight.dtype` or `.device` of a projection (transformers' T5 does), not for maths.
    """

    def __init__(self, first: nn.Linear, second: nn.Linear):
        super().__init__(first, second)
        self.in_features = first.in_features
        self.out_features = second.out_features
        self.rank = first.out_features

    @property
    def weight(self):
        return self[1].weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, rank={self.rank}, out_features={self.out_features}"
