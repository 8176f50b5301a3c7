"""The one helper every training workload uses for distribution, precision and checkpoints.

A workload's loop reads like plain PyTorch:

    sess = strategy.setup(config)                 # inside Ray Train, or alone (world size 1)
    model, opt, sched = sess.prepare(build_model(args), args, total_steps)
    start = sess.restore()                        # {"step": ..} from the latest checkpoint, or None
    for x, y in loader:
        with sess.autocast():
            loss = F.cross_entropy(model(x), y)
        sess.backward(loss)                       # accumulation, clipping, optimizer + LR step
        sess.log({"loss": loss.item()}, step)
        if sess.should_checkpoint(step): sess.save_checkpoint(step, {"loss": ..})
    sess.finish({"accuracy": acc}, step)

`strategy` (ddp | fsdp | deepspeed) and `precision` (fp32 | bf16 | fp16) come from the spec;
the workload never writes strategy code of its own. Inside Ray Train the process group is
already set up by TorchTrainer (gloo on CPU, nccl on GPU); alone it is a single process.

Checkpoints are directories holding `model.pt`, `optimizer.pt`, `state.json` and, written
last, `_COMPLETE`: a directory without that marker is treated as half-written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

COMPLETE_MARKER = "_COMPLETE"


class OptimArgs(BaseModel):
    """Optimizer, learning-rate schedule, accumulation and clipping: the same for every workload.

    Workloads subclass this for their `train:` arguments, so `train.lr=3e-4` works everywhere.
    """

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw", "adam", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, le=10, description="Decoupled (AdamW) or L2 (SGD).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Decay after warm-up: constant, linear to 0, or cosine to 0."
    )
    warmup_steps: int = Field(0, ge=0, le=10**9, description="Linear warm-up from 0.")
    grad_accum: int = Field(1, ge=1, le=4096, description="Micro-batches per optimizer step.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the global gradient norm.")
    log_every: int = Field(10, ge=1, le=10**9, description="Report metrics every N steps.")


def build_optimizer(params, args: OptimArgs):
    import torch

    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(
        params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )


def lr_factor(step: int, args: OptimArgs, total_steps: int) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based)."""
    if args.warmup_steps and step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    if args.lr_schedule == "constant":
        return 1.0
    span = max(1, total_steps - args.warmup_steps)
    progress = min(1.0, (step - args.warmup_steps) / span)
    if args.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, args: OptimArgs, total_steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args, total_steps)
    )


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _in_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


@dataclass
class Session:
    """Per-process training state. Build it with `setup(config)`."""

    strategy: str = "ddp"
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    in_ray: bool = False
    checkpoint_every: int = 100
    seed: int = 0
    run_dir: str | None = None
    deepspeed: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    args: OptimArgs | None = None
    micro_step: int = 0
    optimizer_steps: int = 0
    _last_log_time: float = field(default_factory=time.perf_counter)
    _last_log_step: int = 0
    _restored_from: str | None = None

    # -- device and precision ------------------------------------------------------------

    @property
    def device(self):
        import torch

        if torch.cuda.is_available() and self.config.get("use_gpu", False):
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """Autocast context for the forward pass: bf16 on CPU or GPU, fp16 on GPU."""
        import torch

        if self.precision == "fp32" or self.strategy == "deepspeed":
            # DeepSpeed casts the model itself (its bf16/fp16 config sections).
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- wrapping ------------------------------------------------------------------------

    def prepare(self, model, args: OptimArgs, total_steps: int, params=None):
        """Move and wrap the model for the strategy; build optimizer and LR schedule.

        Returns (model, optimizer, scheduler). Use the returned model for forward passes.
        """
        import torch

        self.args = args
        model = model.to(self.device)
        if self.strategy == "ddp" or self.strategy == "auto":
            if self.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                device_ids = [self.local_rank] if self.device.type == "cuda" else None
                model = DDP(model, device_ids=device_ids)
            optimizer = build_optimizer(params or model.parameters(), args)
        else:
            raise NotImplementedError(f"strategy {self.strategy!r} is not available yet")
        scheduler = build_scheduler(optimizer, args, total_steps)
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        return model, optimizer, scheduler

    def unwrap(self, model=None):
        model = model if model is not None else self.model
        return getattr(model, "module", model)

    # -- stepping ------------------------------------------------------------------------

    def backward(self, loss) -> bool:
        """Backward on one micro-batch; every `grad_accum` calls, clip and step.

        Returns True when an optimizer step was taken.
        """
        import torch

        assert self.args is not None, "call prepare() first"
        accum = self.args.grad_accum
        self.micro_step += 1
        boundary = self.micro_step % accum == 0
        scaled = loss / accum
        sync = boundary or self.world_size == 1 or not hasattr(self.model, "no_sync")
        ctx = contextlib.nullcontext() if sync else self.model.no_sync()
        with ctx:
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        if not boundary:
            return False
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.args.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.optimizer_steps += 1
        return True

    # -- collectives ---------------------------------------------------------------------

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        import torch

        if self.world_size == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # -- reporting -----------------------------------------------------------------------

    def throughput(self, step: int, samples_per_step: int) -> dict[str, float]:
        """Samples/s and step time since the last call (global, across workers)."""
        now = time.perf_counter()
        steps = max(1, step - self._last_log_step)
        dt = max(1e-9, now - self._last_log_time)
        self._last_log_time, self._last_log_step = now, step
        return {
            "samples_per_s": steps * samples_per_step * self.world_size / dt,
            "step_time_s": dt / steps,
        }

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record metrics for `step` (no checkpoint). Every worker calls this; rank 0 writes.

        With a local (or NFS) run directory, rank 0 appends to metrics.jsonl itself: a Ray
        Train report is a barrier whose result queue the controller drains every couple of
        seconds, so reporting every few steps would stall training. With a URI run directory
        the metrics go through ray.train.report instead (slower, but they arrive).
        """
        metrics = {**_plain(metrics), "step": step}
        # Sweeps (Tune schedulers such as ASHA) need every log as a Ray report.
        report = self.config.get("report_metrics_to_ray", False)
        if self.in_ray and (report or not self._local_run_dir()):
            import ray.train

            ray.train.report(metrics)
        if self.is_main and self._local_run_dir():
            self._append_metrics(metrics)
        elif self.is_main and not self.in_ray:
            self._append_metrics(metrics)

    def _local_run_dir(self) -> bool:
        return bool(self.run_dir) and "://" not in str(self.run_dir)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        row = {**row, "time": time.time()}
        if self._local_run_dir():
            path = Path(self.run_dir) / "metrics.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
        if not self.in_ray:
            print(json.dumps(row, default=float), flush=True)

    def _truncate_metrics(self, after_step: int) -> None:
        """On resume, drop rows past the checkpoint: those steps run again."""
        if not (self.is_main and self._local_run_dir()):
            return
        path = Path(self.run_dir) / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", -1) <= after_step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed writer
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    def should_checkpoint(self, step: int) -> bool:
        return step > 0 and step % self.checkpoint_every == 0

    def save_checkpoint(self, step: int, metrics: dict[str, Any], state: dict | None = None,
                        final: bool = False) -> None:
        """Write a checkpoint of model, optimizer, schedule and `state`, and report it.

        Every worker must call this (it is a collective under DDP/FSDP/DeepSpeed).
        """
        import torch

        metrics = {**_plain(metrics), "step": step}
        state = {**(state or {}), "step": step, "optimizer_steps": self.optimizer_steps,
                 "micro_step": self.micro_step, "world_size": self.world_size,
                 "strategy": self.strategy, "final": final}
        name = f"checkpoint_{step:06d}"
        tmp = tempfile.mkdtemp(prefix=f"orch-{name}-")
        try:
            wrote = False
            if self.is_main:
                torch.save(self.unwrap().state_dict(), os.path.join(tmp, "model.pt"))
                torch.save(
                    {"optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler else None},
                    os.path.join(tmp, "optimizer.pt"),
                )
                _write_json(os.path.join(tmp, "state.json"), state)
                _write_json(os.path.join(tmp, "config.json"), self.config)
                _write_json(os.path.join(tmp, COMPLETE_MARKER), {"step": step, "files": sorted(os.listdir(tmp))})
                wrote = True
            self._report_checkpoint(tmp if wrote else None, name, metrics)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _report_checkpoint(self, directory: str | None, name: str, metrics: dict) -> None:
        if self.is_main and (self._local_run_dir() or not self.in_ray):
            self._append_metrics({**metrics, "checkpoint": name})
        if self.in_ray:
            import ray.train

            ckpt = ray.train.Checkpoint.from_directory(directory) if directory else None
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        else:
            if directory and self.run_dir:
                dest = Path(self.run_dir) / name
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(directory, dest)

    def finish(self, metrics: dict[str, Any], step: int, state: dict | None = None) -> None:
        """Final report: always with a checkpoint, so Ray's Result carries these metrics."""
        self.save_checkpoint(step, {**metrics, "done": 1}, state=state, final=True)

    # -- restoring -----------------------------------------------------------------------

    def latest_checkpoint_dir(self):
        """A context manager yielding the directory of the checkpoint to resume from, or None."""
        if self.in_ray:
            import ray.train

            ckpt = ray.train.get_checkpoint()
            if ckpt is not None:
                return ckpt.as_directory()
        resume = self.config.get("resume_from")
        if resume:
            return contextlib.nullcontext(resume)
        return contextlib.nullcontext(None)

    def restore(self) -> dict | None:
        """Load model/optimizer/schedule from the latest checkpoint; returns its state or None."""
        import torch

        with self.latest_checkpoint_dir() as d:
            if d is None:
                return None
            d = Path(d)
            if not (d / COMPLETE_MARKER).exists():
                from orchestrator.errors import CheckpointError

                raise CheckpointError(f"checkpoint {d} is incomplete (no {COMPLETE_MARKER})")
            state = json.loads((d / "state.json").read_text())
            model_state = torch.load(d / "model.pt", map_location=self.device, weights_only=True)
            try:
                self.unwrap().load_state_dict(model_state)
            except RuntimeError as exc:
                from orchestrator.errors import CheckpointError

                raise CheckpointError(
                    f"checkpoint {d} holds a model of another shape: {str(exc).splitlines()[0]}"
                ) from None
            opt = torch.load(d / "optimizer.pt", map_location=self.device, weights_only=False)
            self.optimizer.load_state_dict(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
            if self.scaler is not None and opt.get("scaler"):
                self.scaler.load_state_dict(opt["scaler"])
            self.optimizer_steps = state.get("optimizer_steps", 0)
            self.micro_step = state.get("micro_step", 0)
            self._restored_from = str(d)
            self._truncate_metrics(int(state.get("step", 0)))
            self._last_log_step = state.get("step", 0)
            if self.is_main:
                print(f"[orch] resumed from {d.name} at step {state.get('step')}", flush=True)
            return state


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, default=str)
        fh.flush()
        os.fsync(fh.fileno())


def setup(config: dict[str, Any]) -> Session:
    """Build the Session for this process from the config that `orch run` passes to workers.

    Keys used: strategy, precision, seed, checkpoint.every_steps, deepspeed, run_dir,
    use_gpu, resume_from (outside Ray only).
    """
    in_ray = _in_ray_train()
    rank, world, local = 0, 1, 0
    if in_ray:
        import ray.train

        ctx = ray.train.get_context()
        rank, world, local = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun, for side-by-side baselines
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if config.get("use_gpu") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", "0"))
    seed = int(config.get("seed", 0))
    seed_everything(seed)  # the same on every rank: identical initial weights
    sess = Session(
        strategy=config.get("strategy", "ddp"),
        precision=config.get("precision", "fp32"),
        rank=rank,
        world_size=world,
        local_rank=local,
        in_ray=in_ray,
        checkpoint_every=int(config.get("checkpoint", {}).get("every_steps", 100)),
        seed=seed,
        run_dir=config.get("run_dir"),
        deepspeed=dict(config.get("deepspeed") or {}),
        config=config,
    )
    return sess


def distributed_sampler(dataset, sess: Session, shuffle: bool = True, drop_last: bool = False):
    """A sampler that gives each worker a disjoint part of the dataset, reshuffled per epoch."""
    from torch.utils.data import DistributedSampler

    return DistributedSampler(
        dataset, num_replicas=sess.world_size, rank=sess.rank, shuffle=shuffle,
        seed=sess.seed, drop_last=drop_last,
    )
