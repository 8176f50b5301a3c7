"""Wrapping a model for its strategy: DDP, FSDP2 (fully_shard) or a DeepSpeed engine.

    model, opt, sched = sess.prepare(build_model(args), args, total_steps)   # calls these

Inside Ray Train the process group is already up (TorchTrainer: gloo on CPU, nccl on GPU);
alone, DeepSpeed gets a one-process group (`single_process_group`) and DDP/FSDP wrap nothing.
"""

from __future__ import annotations

import os
from typing import Any


def distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def single_process_group(device) -> None:
    """A one-process group, so DeepSpeed runs outside Ray and torchrun (main(), benchmarks)."""
    import socket

    import torch.distributed as dist

    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


# -- DDP -------------------------------------------------------------------------------------


def wrap_ddp(model, device, local_rank: int):
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [local_rank] if device.type == "cuda" else None
    # Gradients live in DDP's buckets instead of beside them: 4Ψ bytes less.
    return DDP(model, device_ids=device_ids, gradient_as_bucket_view=True)


# -- FSDP2 -----------------------------------------------------------------------------------


def fsdp_targets(model, fsdp_wrap) -> list:
    """The submodules FSDP shards as their own units (the root is wrapped last, always):
    `fsdp_wrap` names layer classes (or their names), or is a function model -> modules;
    default: each child module that holds parameters."""
    if callable(fsdp_wrap) and not isinstance(fsdp_wrap, type):
        return list(fsdp_wrap(model))
    if fsdp_wrap:
        wanted = tuple(fsdp_wrap) if not isinstance(fsdp_wrap, str | type) else (fsdp_wrap,)
        names = {w for w in wanted if isinstance(w, str)}
        classes = tuple(w for w in wanted if isinstance(w, type))
        return [
            m
            for m in model.modules()
            if m is not model
            and (type(m).__name__ in names or (classes and isinstance(m, classes)))
        ]
    return [c for c in model.children() if any(True for _ in c.parameters())]


def wrap_fsdp(model, device_type: str, world_size: int, precision: str, fsdp_wrap=None):
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from orchestrator.worker.precision import low_dtype

    mesh = init_device_mesh(device_type, (world_size,))
    kwargs: dict[str, Any] = {"mesh": mesh}
    low = low_dtype(precision)
    if low is not None:
        # Compute in low precision; keep the fp32 sharded master weights and reduce
        # gradients in fp32 (as DeepSpeed does).
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    for module in fsdp_targets(model, fsdp_wrap):
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


# -- DeepSpeed -------------------------------------------------------------------------------


def deepspeed_config(
    resolved: dict[str, Any] | None,
    section: dict[str, Any],
    train: dict,
    args,
    precision: str,
    world_size: int,
) -> dict[str, Any]:
    """The plan's resolved DeepSpeed config, or (a workload run alone) one built from the
    spec's `deepspeed:` section and the optimizer arguments."""
    if resolved:
        return dict(resolved)
    from orchestrator.worker import deepspeed_config as dsc

    return dsc.from_parts(
        stage=section.get("stage") if section.get("stage") is not None else dsc.DEFAULT_STAGE,
        offload_optimizer=section.get("offload_optimizer") or "none",
        offload_param=section.get("offload_param") or "none",
        precision=precision,
        grad_accum=args.grad_accum,
        grad_clip=args.grad_clip,
        micro_batch=int(train.get("batch_size", 1)),
        workers=world_size,
    )


def init_deepspeed(
    model, args, total_steps: int, cfg: dict[str, Any], precision: str, device, params=None
):
    """(engine, optimizer, scheduler, args) of a DeepSpeed engine over `model`, with a torch
    optimizer and LR schedule from `args` (args' grad_accum follows the config's)."""
    import deepspeed

    from orchestrator.worker.optim import build_optimizer, build_scheduler
    from orchestrator.worker.precision import cast_inputs_hook, low_dtype

    if not distributed():
        single_process_group(device)
    if device.type == "cpu":
        # DeepSpeed's CPU backend compiles a shared-memory all-reduce op with gcc on first
        # use (minutes on a busy machine; a build killed halfway leaves a lock that hangs
        # every later start). Only inference_all_reduce uses it; training falls back to
        # torch.distributed without it.
        import importlib

        # (import_module: `deepspeed.comm.torch` as an attribute is torch itself)
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

    # The DeepSpeed config decides accumulation and clipping; keep args in step with it so
    # the LR schedule and logs agree (plan() refuses a file that disagrees with train:).
    accum = int(cfg.get("gradient_accumulation_steps", args.grad_accum))
    if accum != args.grad_accum:
        args = args.model_copy(update={"grad_accum": accum})
    optimizer = build_optimizer(params or model.parameters(), args)
    scheduler = build_scheduler(optimizer, args, total_steps)
    engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=cfg,
        dist_init_required=False,
    )
    low = low_dtype(precision)
    if low is not None:
        # DeepSpeed holds the module in bf16/fp16 but leaves the inputs to us.
        engine.module.register_forward_pre_hook(cast_inputs_hook(low), with_kwargs=True)
    return engine, ds_optimizer, ds_scheduler or scheduler, args
