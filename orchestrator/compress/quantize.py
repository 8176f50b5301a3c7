"""int8 quantization through torchao (PyTorch's quantization library; torch 2.14 deprecates the
eager and FX quantization APIs that torch itself shipped).

    quantize_int8(model, adapter, mode="auto", calibration_batches=8) -> (model, notes, mode)

`quantize_dynamic_int8`: torchao's `quantize_` with `Int8DynamicActivationInt8WeightConfig` on
every chosen nn.Linear: weights int8 per output channel, activations quantized per token on the
fly (the weight becomes a torchao `Int8Tensor`; the module stays an nn.Linear).
`quantize_static_int8`: the PT2E flow over the adapter's wrapped module: `torch.export`, then
torchao's `prepare_pt2e` with the `X86InductorQuantizer` (conv+bn folded, conv/linear int8 per
channel, activations int8 per tensor), calibration batches, `convert_pt2e`; the result is an
`orchestrator.compress.layers.ExportedInt8` holding the torch.export program.
`auto` picks static for a model with convolutions and a calibration set, dynamic otherwise, and
falls back to dynamic (saying why) when the model cannot be exported or quantized that way.

Both run fast through torch.compile (inductor with freezing turns the int8 patterns into
oneDNN/x86 int8 kernels); run eagerly they compute the same numbers slowly. `measure` times int8
stages compiled (`fast_module`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections import Counter
from typing import Any

from orchestrator.compress.adapters import Adapter
from orchestrator.compress.measure import linear_weight_bytes
from orchestrator.compress.selection import left_as_is, selected, tied_weights
from orchestrator.compress.spec import CompressError, CompressInputError


def quantization_api() -> str:
    try:
        from importlib.metadata import version

        ver = f" {version('torchao')}"
    except Exception:  # noqa: BLE001 - a version string is a nicety
        ver = ""
    return (
        f"torchao{ver} (quantize_ Int8DynamicActivationInt8WeightConfig; PT2E "
        "prepare_pt2e/convert_pt2e with X86InductorQuantizer); int8 latency via torch.compile"
    )


@contextlib.contextmanager
def _quiet_quant():
    """torchao and torch.export are chatty (pytree registration notices, export hints); the
    report keeps its own notes."""
    loggers = [logging.getLogger(n) for n in ("torch.utils._pytree", "torch.export", "torchao")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def import_torchao():
    """torchao, or a CompressError naming the extra to install."""
    try:
        with _quiet_quant():
            import torchao
    except ImportError as exc:
        raise CompressInputError(
            "int8 quantization needs torchao: pip install 'orchestrator[compress]' "
            f"(or pip install torchao) ({exc})"
        ) from exc
    return torchao


def _dynamic_types():
    import torch.nn as nn

    return (nn.Linear,)


def quantize_dynamic_int8(model, layers: list[str] = (), exclude: list[str] = ()):
    """Dynamic int8 (weights int8 per channel, activations quantized per token on the fly) of
    every chosen nn.Linear of a copy of `model`, through torchao's quantize_. Returns (the
    quantized copy, notes)."""
    import torch

    import_torchao()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    names = {
        n
        for n, m in model.named_modules()
        if type(m) in _dynamic_types() and selected(n, list(layers), list(exclude))
    }
    if not names:
        return model, ["dynamic int8: no Linear layer to quantize"] + left_as_is(
            model, _dynamic_types()
        )
    before = linear_weight_bytes(model)
    counts = Counter(type(model.get_submodule(n)).__name__ for n in names)
    skip_ids = {id(m) for n, m in model.named_modules() if n in names}
    left = left_as_is(model, _dynamic_types(), skip=skip_ids)
    tied = tied_weights(model)
    shared = [n for n in sorted(names) if id(model.get_submodule(n)) in tied]
    model = copy.deepcopy(model)
    with _quiet_quant():
        quantize_(
            model,
            Int8DynamicActivationInt8WeightConfig(set_inductor_config=False),
            filter_fn=lambda m, fqn: fqn in names,
        )
    for m in model.modules():
        # torchao sets a per-instance extra_repr (a functools.partial) that pickle cannot
        # save; the class's own extra_repr stays, so torch.save(model) works
        m.__dict__.pop("extra_repr", None)
    after = linear_weight_bytes(model)
    notes = [
        f"dynamic int8 (torchao Int8DynamicActivationInt8WeightConfig, {torch.get_num_threads()} "
        "threads) of " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    ]
    if before and after:
        notes.append(
            f"Linear weights {before / 1e6:.3f} MB -> {after / 1e6:.3f} MB "
            f"({before / after:.2f}x smaller)"
        )
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
    return model, notes + left


def batch_dynamic_shapes(example: tuple) -> tuple:
    """torch.export dynamic_shapes: the batch dimension of every input is dynamic."""
    import torch

    batch = torch.export.Dim("batch")
    return tuple({0: batch} for _ in example)


def _drop_unused_attrs(gm) -> list[str]:
    """convert_pt2e folds each weight into an int8 copy (_frozen_paramN) but leaves the float
    original registered; remove every parameter/buffer no graph node reads."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = []
    for name, _t in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name in used:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        delattr(owner, attr)
        dropped.append(name)
    return dropped


def _capture(module, example: tuple, dyn: tuple):
    """torch.export for PT2E, strict (TorchDynamo) first: the X86InductorQuantizer finds its
    conv+add+relu patterns by source module, and non-strict export merges the calls of a
    module used twice (torchvision ResNet's one ReLU per block), which the quantizer rejects
    ("Input partition has more than one output node"). Non-strict if dynamo cannot trace."""
    import torch

    try:
        return torch.export.export(module, example, dynamic_shapes=dyn, strict=True)
    except Exception:  # noqa: BLE001 - e.g. code dynamo cannot trace: non-strict next
        return torch.export.export(module, example, dynamic_shapes=dyn, strict=False)


def quantize_static_int8(model, adapter: Adapter, num_batches: int):
    """Static int8 through PT2E: torch.export the adapter's wrapped module, prepare_pt2e with
    the X86InductorQuantizer, calibrate on `num_batches` batches, convert_pt2e, export again.
    Returns (ExportedInt8, notes)."""
    import torch

    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    from orchestrator.compress.layers import ExportedInt8

    wrapped = adapter.module(model).eval()
    example = adapter.example_inputs(2)
    dyn = batch_dynamic_shapes(example)
    with _quiet_quant():
        captured = _capture(copy.deepcopy(wrapped), example, dyn)
        quantizer = xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config()
        )
        prepared = prepare_pt2e(captured.module(), quantizer)
        batches = adapter.calibration_batches(num_batches)
        with torch.no_grad():
            for inputs in batches:
                prepared(*inputs)
        converted = convert_pt2e(prepared)
        _drop_unused_attrs(converted)
        program = torch.export.export(converted, example, dynamic_shapes=dyn)
    q = ExportedInt8(program, converted)
    int8 = Counter()
    for _name, t in q.named_buffers():
        if t.dtype == torch.int8:
            int8[{4: "Conv2d", 2: "Linear", 3: "Conv1d", 5: "Conv3d"}.get(t.dim(), "other")] += 1
    before = Counter(
        type(m).__name__
        for m in wrapped.modules()
        if any(p.dim() > 1 for p in m.parameters(recurse=False))
    )
    notes = [
        f"static int8 (PT2E, X86InductorQuantizer, {len(batches)} calibration batches): int8 "
        "weights of " + ", ".join(f"{k} x{v}" for k, v in sorted(int8.items()))
    ]
    float_left = [n for n, p in q.named_parameters() if p.dim() > 1]
    if float_left:
        notes.append(f"left float: {', '.join(float_left)}")
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
    (an ExportedInt8 over adapter.module(model)); the adapter is told so by the caller.
    `model` itself is left as it is."""
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
            raise CompressInputError(msg)
        notes.append(msg + "; using dynamic int8, so conv layers stay float")
        want_static = False
    if want_static:
        if layers or exclude:
            notes.append("static int8 quantizes the whole graph: compress.layers/exclude ignored")
        try:
            q, more = quantize_static_int8(model, adapter, calibration_batches)
            return q, notes + more, "static"
        except CompressError:
            raise
        except Exception as exc:  # noqa: BLE001 - not every model exports; say so, go on
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if mode == "static":
                raise CompressError(
                    f"static int8 failed (torch.export / PT2E could not capture or "
                    f"convert this model): {first}"
                ) from exc
            notes.append(f"static int8 not possible (PT2E: {first[:200]}); using dynamic int8")
    q, more = quantize_dynamic_int8(model, layers, exclude)
    return q, notes + more, "dynamic"
