"""Exports, each checked against the PyTorch model it came from.

    export_all(model, float_model, adapter, spec, out_dir) -> [export info]

ONNX (`export_onnx`: torch.onnx's TorchScript-based exporter, the dynamo one if that fails;
dynamic batch and token-length axes; run in onnxruntime on a batch of another size and held to
spec.onnx_atol). torch.onnx cannot export PyTorch's int8 operators, so model.onnx is the float
model of the last float stage, and a dynamically quantized model also gets onnxruntime's own
int8 of that graph (`onnx_int8`, model.int8.onnx). TorchScript (`export_torchscript`:
torch.jit.trace of the final model, reloaded and compared with eager). Each info dict names its
format, path, size, what it was checked against, the largest difference and whether it passed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from orchestrator.compress.adapters import Adapter
from orchestrator.compress.spec import CompressError, CompressSpec


def _dynamic_axes(names: list[str], example: tuple) -> dict[str, dict[int, str]]:
    """Batch is dynamic for every input; so is the length of token-id inputs (int, 2-D)."""
    axes: dict[str, dict[int, str]] = {"output": {0: "batch"}}
    for i, (n, t) in enumerate(zip(names, example, strict=True)):
        axes[n] = {0: "batch"}
        if t.dim() == 2 and not t.is_floating_point():
            axes[n][1] = f"seq_{i}"
            axes["output"][1] = "seq_out"  # e.g. logits per decoder position
    return axes


def export_onnx(
    module, example: tuple, check: tuple, path: Path, input_names: list[str] | None, atol: float
) -> dict[str, Any]:
    """torch.onnx.export (TorchScript-based exporter, then the dynamo one if that fails), with
    every input's batch dimension dynamic; then run onnxruntime on `check` inputs (another batch
    size than the traced one) and compare with PyTorch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    names = input_names or [f"input_{i}" for i in range(len(example))]
    module.eval()
    used = "torchscript-based"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=False,
                input_names=names,
                output_names=["output"],
                dynamic_axes=_dynamic_axes(names, example),
            )
        except Exception as first:  # noqa: BLE001
            used = "dynamo"
            try:
                batch = torch.export.Dim("batch")
                torch.onnx.export(
                    module,
                    example,
                    str(path),
                    dynamo=True,
                    input_names=names,
                    output_names=["output"],
                    dynamic_shapes=tuple({0: batch} for _ in example),
                )
            except Exception as second:  # noqa: BLE001
                raise CompressError(
                    f"ONNX export failed: {first}; dynamo exporter: {second}"
                ) from second
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), check, strict=True)}
    got = sess.run(None, feeds)[0]
    with torch.inference_mode():
        want = module(*check).numpy()
    diff = float(np.abs(got - want).max())
    return {
        "format": "onnx",
        "path": str(path),
        "exporter": used,
        "size_bytes": path.stat().st_size,
        "checked_against": f"onnxruntime {ort.__version__}",
        "batch_checked": int(check[0].shape[0]),
        "max_abs_diff": diff,
        "atol": atol,
        "ok": diff <= atol,
    }


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


def export_torchscript(module, example: tuple, check: tuple, path: Path) -> dict[str, Any]:
    import torch

    module.eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
        diff = float((loaded(*check) - module(*check)).abs().max())
    return {
        "format": "torchscript",
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "checked_against": "eager PyTorch",
        "batch_checked": int(check[0].shape[0]),
        "max_abs_diff": diff,
        "ok": diff <= 1e-4,
    }


def export_all(
    model, float_model, adapter: Adapter, spec: CompressSpec, out: Path, static: bool = False
) -> list[dict[str, Any]]:
    exports: list[dict[str, Any]] = []
    example, check = adapter.example_inputs(2), adapter.example_inputs(3)
    final_module = model if static else adapter.module(model)
    float_module = adapter.module(float_model)
    for fmt in spec.export:
        if fmt == "onnx":
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
                    "the float model of the last float stage: torch.onnx cannot "
                    "export PyTorch's int8 operators"
                )
            exports.append(info)
            if model is not float_model and not static:
                exports.append(
                    onnx_int8(out / "model.onnx", out / "model.int8.onnx", float_module, check)
                )
        elif fmt == "torchscript":
            exports.append(
                export_torchscript(final_module, example, check, out / "model.torchscript.pt")
            )
    return exports
