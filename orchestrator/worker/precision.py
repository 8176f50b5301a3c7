"""Mixed precision: `precision: fp32 | bf16 | fp16` from the spec.

    with sess.autocast():            # Session.autocast() calls autocast() below
        loss = model(x)

bf16 autocasts on CPU and GPU; fp16 autocasts on GPU with a loss scaler (`grad_scaler`).
Under DeepSpeed the engine holds the module in bf16/fp16 itself (its config sections) and
turns an outer autocast off inside its forward, so there is no autocast; the inputs are cast
for it by `cast_inputs_hook` instead. FSDP2 gets a MixedPrecisionPolicy
(orchestrator/worker/wrap.py).
"""

from __future__ import annotations

import contextlib


def low_dtype(precision: str):
    """torch.bfloat16 / torch.float16 for bf16 / fp16; None for fp32."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(precision: str, device_type: str, under_deepspeed: bool = False):
    """The autocast context of a forward pass (a no-op for fp32 and under DeepSpeed)."""
    import torch

    if precision == "fp32" or under_deepspeed:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=low_dtype(precision))


def grad_scaler(precision: str, device_type: str):
    """fp16's loss scaler; None for bf16 and fp32, which need none."""
    import torch

    return torch.amp.GradScaler(device_type) if precision == "fp16" else None


def cast_inputs_hook(dtype):
    """A forward pre-hook casting floating-point inputs to `dtype` (DeepSpeed leaves the
    inputs to us while it holds the module in bf16/fp16)."""
    import torch

    def cast(x):
        return x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x

    def hook(_module, args, kwargs):
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook
