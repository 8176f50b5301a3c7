"""Measuring a model after each stage: one `StageRow` of the report.

    measure(stage, model, adapter, repeats, notes) -> StageRow

A row holds parameters and non-zero parameters (`count_params`: int8 weights in packed
quantized modules count too), the bytes torch.save writes for the state_dict and their zlib
size (`state_dict_size`: where unstructured zeros show), the median CPU latency at batch 1 and
64 (`latency_ms`), the task metric (the adapter's evaluate) and the stage's notes.
`linear_weight_bytes` is the size of the Linear weights alone (what int8 shrinks).
"""

from __future__ import annotations

import io
import statistics
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from orchestrator.compress.adapters import Adapter


@dataclass
class StageRow:
    stage: str
    params: int
    nonzero: int
    size_bytes: int
    gzip_bytes: int
    latency_b1_ms: float | None
    latency_b64_ms: float | None
    metrics: dict[str, float]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _tensors(value) -> Iterator[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def count_params(model) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting int8 weights and biases held in packed
    quantized modules as parameters too (they are not nn.Parameters any more)."""
    import torch

    total = nonzero = 0
    param_ids = set()
    for p in model.parameters():
        param_ids.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    for key, value in model.state_dict(keep_vars=True).items():
        # int8 modules keep weight/bias as plain (quantized) tensors or in packed params
        if "_packed_params" not in key and not key.endswith(("weight", "bias")):
            continue
        for t in _tensors(value):
            if id(t) in param_ids:
                continue
            total += t.numel()
            nonzero += int(torch.count_nonzero(t.dequantize() if t.is_quantized else t.detach()))
    return total, nonzero


def serialized_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def state_dict_size(model) -> tuple[int, int]:
    """(bytes torch.save writes for the state_dict, those bytes zlib-compressed): the second
    shows what zeros from pruning save with a generic compressor."""
    blob = serialized_bytes(model.state_dict())
    return len(blob), len(zlib.compress(blob, 1))


def linear_weight_bytes(model) -> int:
    """Bytes torch.save writes for the weights of every Linear (float or int8-quantized)."""
    import torch.nn as nn

    weights = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            weights[name] = m.weight.detach()
        elif _is_quantized_linear(m):
            weights[name] = m.weight()
    return len(serialized_bytes(weights)) if weights else 0


def _is_quantized_linear(m) -> bool:
    mod = type(m).__module__
    return (
        type(m).__name__ == "Linear"
        and mod.startswith("torch.ao.nn.quantized")
        and callable(getattr(m, "weight", None))
    )


def latency_ms(module, inputs: tuple, repeats: int, warmup: int = 2) -> float:
    """Median wall time of one forward pass, in ms, over `repeats` timed calls."""
    import torch

    module.eval()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            module(*inputs)
        for _ in range(repeats):
            t0 = time.perf_counter()
            module(*inputs)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(
    stage: str,
    model,
    adapter: Adapter,
    repeats: int,
    notes: list[str] | None = None,
    seconds: float = 0.0,
) -> StageRow:
    params, nonzero = count_params(model)
    size, gz = state_dict_size(model)
    wrapped = adapter.module(model)
    notes = list(notes or [])
    lat: dict[int, float | None] = {}
    for bs in (1, 64):
        try:
            lat[bs] = latency_ms(wrapped, adapter.example_inputs(bs), repeats)
        except Exception as exc:  # noqa: BLE001 - a model that cannot run is named, not hidden
            lat[bs] = None
            notes.append(f"latency at batch {bs} failed: {exc}")
    metrics = {}
    if adapter.evaluate is not None:
        metrics = {k: float(v) for k, v in adapter.evaluate(model).items()}
    return StageRow(stage, params, nonzero, size, gz, lat[1], lat[64], metrics, seconds, notes)
