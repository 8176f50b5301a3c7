"""int8 quantization through torch.ao.quantization (PyTorch's own API).

    quantize_int8(model, adapter, mode="auto", calibration_batches=8) -> (model, notes, mode)

`quantize_dynamic_int8`: weights int8, activations quantized on the fly, for Linear, LSTM, GRU
and their cells (eager `quantize_dynamic`). `quantize_static_int8`: FX graph mode
(`prepare_fx`, calibration batches, `convert_fx`; conv+bn+relu fused) over the adapter's
wrapped module. `auto` picks static for a model with convolutions and a calibration set,
dynamic otherwise, and falls back to dynamic (saying why) when FX cannot trace the model.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import Counter
from typing import Any

from orchestrator.compress.adapters import Adapter
from orchestrator.compress.measure import linear_weight_bytes
from orchestrator.compress.selection import leaf_param_modules, left_as_is, selected, tied_weights
from orchestrator.compress.spec import CompressError


def quantization_api() -> str:
    return "torch.ao.quantization (PyTorch's eager dynamic + FX graph mode static)"


@contextlib.contextmanager
def _quiet_quant():
    # torch 2.14 marks torch.ao.quantization deprecated in favour of torchao (not installed here);
    # it still works and is PyTorch's own API, so its warnings stay out of the report.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _dynamic_types():
    import torch.nn as nn

    return (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def quantize_dynamic_int8(model, layers: list[str] = (), exclude: list[str] = ()):
    """Dynamic int8 (weights int8, activations quantized on the fly) of Linear/LSTM/GRU."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = {
        n: default_dynamic_qconfig
        for n, m in model.named_modules()
        if type(m) in _dynamic_types() and selected(n, list(layers), list(exclude))
    }
    if not names:
        return model, ["dynamic int8: no Linear/LSTM/GRU layer to quantize"] + left_as_is(
            model, _dynamic_types()
        )
    before = linear_weight_bytes(model)
    counts = Counter(type(model.get_submodule(n)).__name__ for n in names)
    skip_ids = {id(m) for n, m in model.named_modules() if n in names}
    left = left_as_is(model, _dynamic_types(), skip=skip_ids)
    with _quiet_quant():
        q = quantize_dynamic(model, qconfig_spec=names, dtype=torch.qint8)
    after = linear_weight_bytes(q)
    notes = [
        f"dynamic int8 ({torch.backends.quantized.engine} engine) of "
        + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    ]
    if before and after:
        notes.append(
            f"Linear weights {before / 1e6:.3f} MB -> {after / 1e6:.3f} MB "
            f"({before / after:.2f}x smaller)"
        )
    tied = tied_weights(model)
    shared = [n for n in names if id(model.get_submodule(n)) in tied]
    if shared:
        notes.append(
            f"{', '.join(shared)}: weight tied to another module (e.g. an embedding); "
            "quantized as an int8 copy while the float original stays, so both count"
        )
    unselected = [
        n for n, m in model.named_modules() if type(m) in _dynamic_types() and n not in names
    ]
    if unselected:
        notes.append(f"excluded by layers/exclude: {', '.join(unselected)}")
    return q, notes + left


def quantize_static_int8(model, adapter: Adapter, num_batches: int):
    """Static int8 through FX graph mode: observe activations on calibration batches, then
    convert (conv/linear/bn fused; ops without int8 kernels stay float between dequant/quant)."""
    import torch
    import torch.nn as nn
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = torch.backends.quantized.engine
    wrapped = adapter.module(model)
    with _quiet_quant():
        prepared = prepare_fx(
            copy.deepcopy(wrapped).eval(),
            get_default_qconfig_mapping(engine),
            adapter.example_inputs(2),
        )
        batches = adapter.calibration_batches(num_batches)
        with torch.inference_mode():
            for inputs in batches:
                prepared(*inputs)
        q = convert_fx(prepared)
    before = Counter(type(m).__name__ for _n, m in leaf_param_modules(wrapped))
    after = Counter(
        type(m).__name__
        for _n, m in q.named_modules()
        if type(m).__module__.startswith(
            ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
        )
        and type(m).__name__ != "LinearPackedParams"
    )
    notes = [
        f"static int8 (FX graph mode, {engine} engine, {len(batches)} calibration batches): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(after.items()))
    ]
    float_left = Counter(
        type(m).__name__
        for _n, m in leaf_param_modules(q)
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm))
    )
    if float_left:
        notes.append("left float: " + ", ".join(f"{k} x{v}" for k, v in sorted(float_left.items())))
    notes.append(
        "float layers before: " + ", ".join(f"{k} x{v}" for k, v in sorted(before.items()))
    )
    return q, notes


def quantize_int8(
    model,
    adapter: Adapter,
    mode: str,
    calibration_batches: int,
    layers: list[str] = (),
    exclude: list[str] = (),
) -> tuple[Any, list[str], str]:
    """Returns (quantized model, notes, mode used). A static result is already wrapped
    (a GraphModule over adapter.module(model)); the adapter is told so by the caller."""
    import torch.nn as nn

    has_conv = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    notes: list[str] = []
    want_static = mode == "static" or (mode == "auto" and has_conv)
    if want_static and adapter.calibration_batches is None:
        msg = (
            "static int8 needs a calibration set: the workload gives none (define "
            "calibration_batches(config, num_batches))"
        )
        if mode == "static":
            raise CompressError(msg)
        notes.append(msg + "; using dynamic int8, so conv layers stay float")
        want_static = False
    if want_static:
        if layers or exclude:
            notes.append("static int8 quantizes the whole graph: compress.layers/exclude ignored")
        try:
            q, more = quantize_static_int8(model, adapter, calibration_batches)
            return q, notes + more, "static"
        except Exception as exc:  # noqa: BLE001 - FX cannot trace every model; say so, go on
            if mode == "static":
                raise CompressError(
                    f"static int8 failed (FX graph mode could not trace or "
                    f"convert this model): {str(exc).splitlines()[0]}"
                ) from exc
            notes.append(
                f"static int8 not possible (FX: {str(exc).splitlines()[0][:200]}); "
                "using dynamic int8"
            )
    q, more = quantize_dynamic_int8(model, layers, exclude)
    return q, notes + more, "dynamic"
