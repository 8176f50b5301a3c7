"""Exports, each checked against the PyTorch model it came from.

    export_all(model, float_model, adapter, spec, out_dir) -> [export info]

ONNX (`export_onnx`: `torch.onnx.export(dynamo=True)`, i.e. torch.export then ONNX; dynamic
batch and token-length dimensions; Hugging Face models are exported with eager attention; run
in onnxruntime on a batch of another size and held to spec.onnx_atol). torch.onnx does not
export torchao's int8 tensors, so model.onnx is the float model of the last float stage, and a
dynamically quantized model also gets onnxruntime's own int8 of that graph (`onnx_int8`,
model.int8.onnx). PyTorch deploy artifact (`export_pt2`: `torch.export` of the final, possibly
int8, model with a dynamic batch, `torch.export.save` to model.pt2, loaded back with
`torch.export.load` and compared with eager). Each info dict names its format, path, size, what
it was checked against, the largest difference and whether it passed.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

from orchestrator.compress.adapters import Adapter
from orchestrator.compress.spec import CompressError, CompressSpec


def _dynamic_shapes(example: tuple, token_lengths: bool = True) -> tuple:
    """torch.export dynamic_shapes: batch is dynamic for every input (one shared dimension);
    so is the length of token-id inputs (int, 2-D) when `token_lengths`."""
    import torch

    batch = torch.export.Dim("batch")
    shapes = []
    for i, t in enumerate(example):
        dims = {0: batch}
        if token_lengths and t.dim() == 2 and not t.is_floating_point():
            dims[1] = torch.export.Dim(f"seq_{i}")
        shapes.append(dims)
    return tuple(shapes)


@contextlib.contextmanager
def _eager_attention(module):
    """Hugging Face models switched to their eager attention while exporting: the ONNX
    decomposition of scaled_dot_product_attention yields strides that make T5's
    `attn_output.reshape(...)` an impossible view in torch 2.14 (the export fails); the eager
    attention computes the same function. Restored afterwards."""
    changed = []
    for m in module.modules():
        cfg = getattr(m, "config", None)
        impl = getattr(cfg, "_attn_implementation", None)
        if impl and impl != "eager" and hasattr(m, "set_attn_implementation"):
            try:
                m.set_attn_implementation("eager")
                changed.append((m, impl))
            except Exception:  # noqa: BLE001 - an old or custom model: export as it is
                continue
    try:
        yield
    finally:
        for m, impl in changed:
            m.set_attn_implementation(impl)


def _first_line(exc: BaseException) -> str:
    while exc.__cause__ is not None and str(exc).startswith("Failed to"):
        exc = exc.__cause__  # torch.onnx wraps the real error in a "Failed to ..." banner
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # torch.onnx's progress
    return stack


def export_onnx(
    module, example: tuple, check: tuple, path: Path, input_names: list[str] | None, atol: float
) -> dict[str, Any]:
    """torch.onnx.export(dynamo=True) with every input's batch (and token length) dynamic,
    weights inside the one file; then run onnxruntime on `check` inputs (another batch size
    than the exported one) and compare with PyTorch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    names = input_names or [f"input_{i}" for i in range(len(example))]
    module.eval()
    errors = []
    with _quiet(), _eager_attention(module):
        for token_lengths in (True, False):
            try:
                torch.onnx.export(
                    module,
                    example,
                    str(path),
                    dynamo=True,
                    external_data=False,
                    input_names=names,
                    output_names=["output"],
                    dynamic_shapes=_dynamic_shapes(example, token_lengths),
                    verbose=False,
                )
                break
            except Exception as exc:  # noqa: BLE001 - retry with the batch alone dynamic
                errors.append(_first_line(exc))
        else:
            raise CompressError(f"ONNX export (torch.onnx.export dynamo=True) failed: {errors[-1]}")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), check, strict=True)}
    got = sess.run(None, feeds)[0]
    with torch.inference_mode():
        want = module(*check).numpy()
    diff = float(np.abs(got - want).max())
    info = {
        "format": "onnx",
        "path": str(path),
        "exporter": "dynamo",
        "size_bytes": path.stat().st_size,
        "checked_against": f"onnxruntime {ort.__version__}",
        "batch_checked": int(check[0].shape[0]),
        "max_abs_diff": diff,
        "atol": atol,
        "ok": diff <= atol,
    }
    if errors:
        info["dynamic"] = "batch only (token lengths fixed: " + errors[0] + ")"
    return info


def onnx_int8(float_path: Path, path: Path, module, check: tuple) -> dict[str, Any]:
    """onnxruntime's own dynamic int8 of the float ONNX graph (torch.onnx cannot export
    PyTorch's quantized operators); compared with the float PyTorch model."""
    import logging

    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is not for this report
    try:
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), check, strict=True)}
    got = sess.run(None, feeds)[0]
    with torch.inference_mode():
        want = module(*check).numpy()
    return {
        "format": "onnx-int8",
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "checked_against": f"onnxruntime {ort.__version__} (int8) vs PyTorch float",
        "max_abs_diff": float(np.abs(got - want).max()),
        "ok": True,
        "note": "int8 ONNX: agreement is approximate by design",
    }


def export_pt2(module, example: tuple, check: tuple, path: Path, atol: float) -> dict[str, Any]:
    """torch.export of `module` (batch and token lengths dynamic, or the batch alone), saved with
    torch.export.save, loaded back with torch.export.load and run on `check` inputs (another
    batch size) against eager PyTorch. A static int8 model (ExportedInt8) is already an
    exported program: it is saved as it is."""
    import torch

    from orchestrator.compress.quantize import _quiet_quant

    module.eval()
    program = getattr(module, "program", None)
    errors = []
    with _quiet_quant(), _quiet():
        if program is None:
            for token_lengths in (True, False):
                try:
                    program = torch.export.export(
                        module, example, dynamic_shapes=_dynamic_shapes(example, token_lengths)
                    )
                    break
                except Exception as exc:  # noqa: BLE001 - retry with the batch alone dynamic
                    errors.append(_first_line(exc))
            else:
                raise CompressError(f"torch.export failed: {errors[-1]}")
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
        with torch.inference_mode():
            diff = float((loaded(*check) - module(*check)).abs().max())
    info = {
        "format": "pt2",
        "path": str(path),
        "exporter": "torch.export",
        "size_bytes": path.stat().st_size,
        "checked_against": "eager PyTorch (torch.export.load)",
        "batch_checked": int(check[0].shape[0]),
        "max_abs_diff": diff,
        "atol": atol,
        "ok": diff <= atol,
    }
    if errors:
        info["dynamic"] = "batch only (token lengths fixed: " + errors[0] + ")"
    return info


def export_all(
    model, float_model, adapter: Adapter, spec: CompressSpec, out: Path, static: bool = False
) -> list[dict[str, Any]]:
    exports: list[dict[str, Any]] = []
    example, check = adapter.example_inputs(2), adapter.example_inputs(3)
    final_module = model if static else adapter.module(model)
    float_module = adapter.module(float_model)
    done = set()
    for fmt in spec.export:
        if fmt == "onnx" and "onnx" not in done:
            done.add("onnx")
            info = export_onnx(
                float_module,
                example,
                check,
                out / "model.onnx",
                adapter.input_names,
                spec.onnx_atol,
            )
            if model is not float_model:
                info["note"] = (
                    "the float model of the last float stage: torch.onnx does not "
                    "export PyTorch int8 tensors"
                )
            exports.append(info)
            if model is not float_model and not static:
                exports.append(
                    onnx_int8(out / "model.onnx", out / "model.int8.onnx", float_module, check)
                )
        elif fmt in ("pt2", "torchscript") and "pt2" not in done:
            done.add("pt2")
            info = export_pt2(final_module, example, check, out / "model.pt2", spec.onnx_atol)
            if fmt == "torchscript":
                info["note"] = (
                    "torchscript asked: TorchScript is deprecated in torch 2.x, so the "
                    "torch.export program (model.pt2) is written instead"
                )
            exports.append(info)
    return exports
