"""Fine-tuning after pruning or factorization, with pruned zeros kept at zero.

    finetune(model, adapter, steps, lr, batch_size, keep_zero) -> notes

Adam on the adapter's training batches and loss; every (module, parameter) in `keep_zero`
gets a mask from its zero pattern while training, made permanent afterwards. Without training
data (no `train_batches` hook) it is skipped and the note says what to add.
"""

from __future__ import annotations

from typing import Any

from orchestrator.compress.adapters import Adapter


def finetune(
    model,
    adapter: Adapter,
    steps: int,
    lr: float,
    batch_size: int,
    keep_zero: list[tuple[Any, str]],
) -> list[str]:
    """Train `steps` steps with Adam; every pruned weight that is zero stays zero (a mask from
    the zero pattern while training, made permanent afterwards)."""
    import torch
    import torch.nn.utils.prune as prune

    if adapter.train_batches is None:
        return [
            "skipped: this workload gives no training data (define train_batches(config, "
            "batch_size) in the workload module)"
        ]
    masked = []
    for m, name in keep_zero:
        p = getattr(m, name, None)
        if p is None or not isinstance(p, torch.nn.Parameter):
            continue
        zero = p.detach() == 0
        if zero.any():
            prune.custom_from_mask(m, name, (~zero).to(p.dtype))
            masked.append((m, name))
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches = adapter.train_batches(batch_size)
    first = last = None
    for _ in range(steps):
        batch = next(batches)
        loss = adapter.compute_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    for m, name in masked:
        prune.remove(m, name)
    model.eval()
    return [
        f"{steps} steps, Adam lr {lr}, batch {batch_size}: loss {first:.4f} -> {last:.4f}"
        + (f"; {len(masked)} pruned tensors kept their zeros" if masked else "")
    ]
