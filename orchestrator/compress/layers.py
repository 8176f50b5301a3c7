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


def _exported_int8_from_pt2(blob: bytes) -> ExportedInt8:
    import io

    import torch

    return ExportedInt8(torch.export.load(io.BytesIO(blob)))


class ExportedInt8(nn.Module):
    """A static int8 model (torchao PT2E: quantize/dequantize ops around float conv/linear) as
    a module. `program` is its torch.export ExportedProgram (what model.pt2 holds); `graph` (the
    GraphModule convert_pt2e returned, or the program's module once loaded back) runs it eagerly
    with reference numerics, slowly; torch.compile of this module with inductor's freezing on
    runs it with int8 kernels. Pickles as a .pt2 archive, so torch.save(model) / torch.load
    work."""

    def __init__(self, program, graph=None):
        super().__init__()
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        self.program = program
        self.graph = allow_exported_model_train_eval(
            graph if graph is not None else program.module()
        )

    def forward(self, *args):
        return self.graph(*args)

    def __reduce__(self):
        import io

        import torch

        buf = io.BytesIO()
        torch.export.save(self.program, buf)
        return (_exported_int8_from_pt2, (buf.getvalue(),))
