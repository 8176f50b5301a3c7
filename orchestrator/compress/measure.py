"""Measuring a model after each stage: one `StageRow` of the report.

    measure(stage, model, adapter, repeats, notes) -> StageRow

A row holds parameters and non-zero parameters (`count_params`: int8 weights count too,
whether torchao tensors or the int8 constants of a PT2E graph), the bytes torch.save writes for
the state_dict and their zlib size (`state_dict_size`: where unstructured zeros show), the
median CPU latency at batch 1 and 64 (`latency_ms`; int8 stages through torch.compile, see
`fast_module`), the task metric (the adapter's evaluate) and the stage's notes.
`linear_weight_bytes` is the size of the Linear weights alone (what int8 shrinks).
"""

from __future__ import annotations

import contextlib
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


def _plain(t):
    """The stored values of a tensor: a torchao int8 tensor's int8 data (`qdata`), else t."""
    qdata = getattr(t, "qdata", None)
    return qdata if qdata is not None else t.detach()


def count_params(model) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting int8 weights as parameters too: torchao's
    int8 weights (parameters holding an Int8Tensor) and the int8 weight constants a PT2E graph
    keeps as buffers (`_frozen_paramN`, not nn.Parameters any more)."""
    import torch

    total = nonzero = 0
    param_ids = set()
    for p in model.parameters():
        param_ids.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(_plain(p)))
    for key, value in model.state_dict(keep_vars=True).items():
        if "_frozen_param" not in key and not key.endswith(("weight", "bias")):
            continue
        for t in _tensors(value):
            if id(t) in param_ids:
                continue
            total += t.numel()
            nonzero += int(torch.count_nonzero(_plain(t)))
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
    """Bytes torch.save writes for the weights of every Linear (float or torchao int8: an
    Int8Tensor saves its int8 data and per-channel scales)."""
    import torch.nn as nn

    weights = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            weights[name] = m.weight.detach()
    return len(serialized_bytes(weights)) if weights else 0


def fast_module(module):
    """`module` through torch.compile as int8 models are meant to run: inductor, one graph per
    input shape (dynamic=False: batch 1 and 64 each get their own). Call it (the first call of
    each shape compiles) inside `freezing()`."""
    import torch

    torch._dynamo.reset()  # earlier stages' graphs would count towards the recompile limit
    return torch.compile(module, dynamic=False)


def freezing():
    """Inductor's freezing on (weights as constants, so the int8 patterns of torchao and PT2E
    become oneDNN/x86 int8 kernels). A global config patch: passed as torch.compile(options=)
    it does not reach the x86 quantization passes in torch 2.14."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


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


def _latencies(lat: dict, timed, wrapped, adapter: Adapter, repeats: int, notes: list[str]):
    """Fill lat[1] and lat[64]; if the compiled module `timed` fails, say why and time
    `wrapped` eagerly. Returns the module that was timed."""
    for bs in (1, 64):
        try:
            lat[bs] = latency_ms(timed, adapter.example_inputs(bs), repeats)
            continue
        except Exception as exc:  # noqa: BLE001 - a model that cannot run is named, not hidden
            error = exc
            if timed is not wrapped:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                notes.append(f"torch.compile failed ({first}): latency timed eagerly")
                timed = wrapped
                try:
                    lat[bs] = latency_ms(timed, adapter.example_inputs(bs), repeats)
                    continue
                except Exception as exc2:  # noqa: BLE001
                    error = exc2
        lat[bs] = None
        notes.append(f"latency at batch {bs} failed: {error}")
    return timed


def measure(
    stage: str,
    model,
    adapter: Adapter,
    repeats: int,
    notes: list[str] | None = None,
    seconds: float = 0.0,
    compiled: bool = False,
) -> StageRow:
    """One report row. `compiled`: time the model through `fast_module` (torch.compile), the
    way int8 models run fast; the first (warm-up) call of each batch size compiles, untimed."""
    params, nonzero = count_params(model)
    size, gz = state_dict_size(model)
    wrapped = adapter.module(model)
    notes = list(notes or [])
    lat: dict[int, float | None] = {}
    timed = wrapped
    patch = contextlib.nullcontext()
    if compiled:
        timed = fast_module(wrapped)
        patch = freezing()
        t0 = time.perf_counter()
    with patch:
        timed = _latencies(lat, timed, wrapped, adapter, repeats, notes)
    if compiled and timed is not wrapped:
        notes.append(
            "latency timed through torch.compile (inductor, freezing; compiling and timing "
            f"took {time.perf_counter() - t0:.0f} s)"
        )
    metrics = {}
    if adapter.evaluate is not None:
        metrics = {k: float(v) for k, v in adapter.evaluate(model).items()}
    return StageRow(stage, params, nonzero, size, gz, lat[1], lat[64], metrics, seconds, notes)
