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

Checkpoints are directories holding `state.json`, `config.json` and, written last by rank 0,
`_COMPLETE`: a directory without that marker is treated as half-written. Beside them:

    ddp        model.pt + optimizer.pt, written by rank 0 (every rank holds everything)
    fsdp       dcp/ (torch.distributed.checkpoint: each rank writes its own shard file,
               rank 0 the .metadata) + trainer.pt (LR schedule, loss scaler)
    deepspeed  deepspeed/<tag>/ (a DeepSpeed engine checkpoint: each rank writes its ZeRO
               shards; rank 0 the module states)

Under Ray every rank reports its own directory to ray.train.report and Ray merges them into
one checkpoint directory, so sharded strategies never gather the full state on one rank.
docs/strategies.md has the whole story.
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


def build_optimizer(params, args: OptimArgs, fused: bool = False):
    """The spec's optimizer. `fused`: torch's single-kernel implementation (CPU and CUDA),
    for plain tensors (DDP, one process); FSDP's DTensors and DeepSpeed's flat partitions keep
    the default. On CPU it steps ResNet-18's 11.7M parameters in 14 ms against 50 ms (foreach)
    and 64 ms (for-loop): bench/optimizer_step.py."""
    import torch

    params = list(params)
    kw = {"fused": True} if fused else {}
    try:
        if args.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, **kw)
        if args.optimizer == "adam":
            return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay, **kw)
        return torch.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, **kw
        )
    except (RuntimeError, TypeError, ValueError):
        if not fused:
            raise
        return build_optimizer(params, args, fused=False)  # a device or dtype without it


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
    _restored_state: dict | None = None  # state.json of the checkpoint restore() loaded
    engine: Any = None  # the DeepSpeed engine, under strategy deepspeed
    fsdp: bool = False  # True once the model is wrapped with fully_shard

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

        if self.precision == "fp32" or self.engine is not None:
            # DeepSpeed casts the model itself (its bf16/fp16 config sections) and turns an
            # outer autocast off inside its forward; prepare() casts the inputs for it.
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- wrapping ------------------------------------------------------------------------

    def prepare(self, model, args: OptimArgs, total_steps: int, params=None, fsdp_wrap=None):
        """Move and wrap the model for the strategy; build optimizer and LR schedule.

        Returns (model, optimizer, scheduler). Use the returned model for forward passes.
        `total_steps` counts optimizer steps (for the LR schedule). `fsdp_wrap` (or the
        workload module's FSDP_WRAP) picks the modules FSDP shards as units: layer classes
        or their names, or a function model -> list of modules; default: each child module
        that holds parameters.
        """
        import torch

        self.args = args
        model = model.to(self.device)
        if self.strategy == "deepspeed":
            return self._prepare_deepspeed(model, args, total_steps, params)
        if self.strategy == "fsdp" and self._distributed():
            model = self._wrap_fsdp(model, fsdp_wrap)
            optimizer = build_optimizer(params or model.parameters(), args)
        elif self.strategy in ("ddp", "auto", "fsdp"):
            # fsdp on one process without a process group: nothing to shard.
            if self.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                device_ids = [self.local_rank] if self.device.type == "cuda" else None
                # Gradients live in DDP's buckets instead of beside them: 4Ψ bytes less.
                model = DDP(model, device_ids=device_ids, gradient_as_bucket_view=True)
            optimizer = build_optimizer(params or model.parameters(), args, fused=True)
        else:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected ddp, fsdp or deepspeed")
        scheduler = build_scheduler(optimizer, args, total_steps)
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        return model, optimizer, scheduler

    def _distributed(self) -> bool:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()

    # FSDP2 ----------------------------------------------------------------------------------

    def _wrap_targets(self, model, fsdp_wrap) -> list:
        """The submodules FSDP shards as their own units (the root is wrapped last, always)."""
        if fsdp_wrap is None and self.config.get("workload"):
            try:
                from orchestrator.spec import import_workload

                fsdp_wrap = getattr(import_workload(self.config["workload"]), "FSDP_WRAP", None)
            except ImportError:
                fsdp_wrap = None
        if callable(fsdp_wrap) and not isinstance(fsdp_wrap, type):
            return list(fsdp_wrap(model))
        if fsdp_wrap:
            wanted = tuple(fsdp_wrap) if not isinstance(fsdp_wrap, str | type) else (fsdp_wrap,)
            names = {w for w in wanted if isinstance(w, str)}
            classes = tuple(w for w in wanted if isinstance(w, type))
            return [m for m in model.modules() if m is not model
                    and (type(m).__name__ in names or (classes and isinstance(m, classes)))]
        return [c for c in model.children() if any(True for _ in c.parameters())]

    def _wrap_fsdp(self, model, fsdp_wrap):
        import torch
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        kwargs: dict[str, Any] = {"mesh": mesh}
        if self.precision in ("bf16", "fp16"):
            low = torch.bfloat16 if self.precision == "bf16" else torch.float16
            # Compute in low precision; keep the fp32 sharded master weights and reduce
            # gradients in fp32 (as DeepSpeed does).
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
        for module in self._wrap_targets(model, fsdp_wrap):
            fully_shard(module, **kwargs)
        fully_shard(model, **kwargs)
        self.fsdp = True
        return model

    # DeepSpeed ------------------------------------------------------------------------------

    def deepspeed_config(self, args: OptimArgs) -> dict[str, Any]:
        """The plan's resolved DeepSpeed config, or one built from the session's choices."""
        cfg = self.config.get("deepspeed_config")
        if cfg:
            return dict(cfg)
        from orchestrator import deepspeed_config

        ds = self.deepspeed
        train = self.config.get("train") or {}
        return deepspeed_config.from_parts(
            stage=ds.get("stage") if ds.get("stage") is not None else deepspeed_config.DEFAULT_STAGE,
            offload_optimizer=ds.get("offload_optimizer") or "none",
            offload_param=ds.get("offload_param") or "none",
            precision=self.precision,
            grad_accum=args.grad_accum,
            grad_clip=args.grad_clip,
            micro_batch=int(train.get("batch_size", 1)),
            workers=self.world_size,
        )

    def _prepare_deepspeed(self, model, args: OptimArgs, total_steps: int, params=None):
        import torch

        if not self._distributed():
            _single_process_group(self.device)
        import deepspeed

        if self.device.type == "cpu":
            # DeepSpeed's CPU backend compiles a shared-memory all-reduce op with gcc on first
            # use (minutes on a busy machine; a build killed halfway leaves a lock that hangs
            # every later start). Only inference_all_reduce uses it; training falls back to
            # torch.distributed without it.
            import importlib

            # (import_module: `deepspeed.comm.torch` as an attribute is torch itself)
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

        cfg = self.deepspeed_config(args)
        # The DeepSpeed config decides accumulation and clipping; keep args in step with it so
        # the LR schedule and logs agree (plan.py refuses a file that disagrees with train:).
        accum = int(cfg.get("gradient_accumulation_steps", args.grad_accum))
        if accum != args.grad_accum:
            args = args.model_copy(update={"grad_accum": accum})
            self.args = args
        optimizer = build_optimizer(params or model.parameters(), args)
        scheduler = build_scheduler(optimizer, args, total_steps)
        engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=cfg,
            dist_init_required=False,
        )
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if low is not None:
            # DeepSpeed holds the module in bf16/fp16 but leaves the inputs to us.
            engine.module.register_forward_pre_hook(_cast_inputs_hook(low), with_kwargs=True)
        self.engine = engine
        self.model, self.optimizer = engine, ds_optimizer
        self.scheduler = ds_scheduler or scheduler
        return engine, ds_optimizer, self.scheduler

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
        if self.engine is not None:
            # DeepSpeed scales by its gradient_accumulation_steps, clips (gradient_clipping)
            # and steps optimizer and LR schedule at the boundary itself.
            boundary = self.engine.is_gradient_accumulation_boundary()
            self.engine.backward(loss)
            self.engine.step()
            self.micro_step += 1
            if boundary:
                self.optimizer_steps += 1
            return boundary
        accum = self.args.grad_accum
        self.micro_step += 1
        boundary = self.micro_step % accum == 0
        scaled = loss / accum
        if self.fsdp:
            # FSDP2: skip the reduce-scatter on micro-batches that only accumulate.
            self.model.set_requires_gradient_sync(boundary or accum == 1)
            ctx = contextlib.nullcontext()
        else:
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
            # Works on FSDP2's DTensor gradients too (the norm is reduced across shards).
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

    def all_gather_object(self, obj: Any) -> list[Any]:
        if self.world_size == 1 or not self._distributed():
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

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
        """True every `checkpoint.every_steps` steps. Workloads call it once per step, which
        is also where ORCH_FAULTS injects a failure (orchestrator/faults.py)."""
        if self.config.get("faults"):
            from orchestrator import faults

            faults.maybe_fail(self.config["faults"], step, self.rank, self.run_dir)
        return step > 0 and step % self.checkpoint_every == 0

    @property
    def checkpoint_format(self) -> str:
        if self.engine is not None:
            return "deepspeed"
        return "dcp" if self.fsdp else "torch"

    def save_checkpoint(self, step: int, metrics: dict[str, Any], state: dict | None = None,
                        final: bool = False, row: bool = True) -> None:
        """Write a checkpoint of model, optimizer, schedule and `state`, and report it.

        Every worker must call this (it is a collective under DDP/FSDP/DeepSpeed). Each rank
        writes what it holds into its own directory; rank 0 writes the marker last, after
        every rank has written (the sharded writers end in a collective).
        """
        import torch

        metrics = {**_plain(metrics), "step": step}
        fmt = self.checkpoint_format
        state = {**(state or {}), "step": step, "optimizer_steps": self.optimizer_steps,
                 "micro_step": self.micro_step, "world_size": self.world_size,
                 "strategy": self.strategy, "precision": self.precision, "format": fmt,
                 "final": final, "metrics": metrics}
        name = f"checkpoint_{step:06d}"
        if self._local_run_dir():
            # A directory of this name is left from before a fallback past a half-written
            # checkpoint (Ray still tracks it and will delete it): never write into it.
            n = 1
            while (Path(self.run_dir) / name).exists():
                name = f"checkpoint_{step:06d}_{n}"
                n += 1
        tmp = tempfile.mkdtemp(prefix=f"orch-{name}-r{self.rank}-")
        try:
            if fmt == "deepspeed":
                # Each rank writes its ZeRO shards under deepspeed/<name>/; rank 0 also the
                # module states. client_state travels with the engine checkpoint too.
                self.engine.save_checkpoint(os.path.join(tmp, "deepspeed"), tag=name,
                                            client_state={"orch_state": state}, save_latest=False)
            elif fmt == "dcp":
                import torch.distributed.checkpoint as dcp
                from torch.distributed.checkpoint.state_dict import get_state_dict

                model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
                dcp.save({"model": model_sd, "optimizer": optim_sd},
                         checkpoint_id=os.path.join(tmp, "dcp"))
            if self.is_main:
                if fmt == "torch":
                    torch.save(self.unwrap().state_dict(), os.path.join(tmp, "model.pt"))
                    torch.save(
                        {"optimizer": self.optimizer.state_dict(),
                         "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler else None},
                        os.path.join(tmp, "optimizer.pt"),
                    )
                elif fmt == "dcp":
                    torch.save({"scheduler": self.scheduler.state_dict(),
                                "scaler": self.scaler.state_dict() if self.scaler else None},
                               os.path.join(tmp, "trainer.pt"))
                _write_json(os.path.join(tmp, "state.json"), state)
                _write_json(os.path.join(tmp, "config.json"), self.config)
            # A collective: every rank's shards are on disk before rank 0 writes the marker,
            # which lists every rank's files so restore can tell a partial merge.
            files = self.all_gather_object(_walk(tmp))
            if self.is_main:
                _write_json(os.path.join(tmp, COMPLETE_MARKER),
                            {"step": step, "format": fmt, "world_size": self.world_size,
                             "files": sorted({f for rank_files in files for f in rank_files})})
            self._report_checkpoint(tmp, name, metrics, row=row)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _report_checkpoint(self, directory: str, name: str, metrics: dict,
                           row: bool = True) -> None:
        if row and self.is_main and (self._local_run_dir() or not self.in_ray):
            self._append_metrics({**metrics, "checkpoint": name})
        has_files = any(True for _ in Path(directory).iterdir())
        if self.in_ray:
            import ray.train

            # Every rank with files reports them; Ray merges the directories into one.
            ckpt = ray.train.Checkpoint.from_directory(directory) if has_files else None
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        elif self.run_dir:
            dest = Path(self.run_dir) / name
            if self.is_main and dest.exists():
                shutil.rmtree(dest)
            self.barrier()
            marker = Path(directory) / COMPLETE_MARKER
            if has_files:
                shutil.copytree(directory, dest, dirs_exist_ok=True,
                                ignore=lambda d, names: [COMPLETE_MARKER] if d == directory else [])
            self.barrier()
            if marker.exists():
                shutil.copy2(marker, dest / COMPLETE_MARKER)

    def finish(self, metrics: dict[str, Any], step: int, state: dict | None = None) -> None:
        """Final report: always with a checkpoint, so Ray's Result carries these metrics.

        A run resumed from its own final checkpoint (its driver died after training had
        ended) trains nothing: it reports that checkpoint's metrics again, and adds no second
        row for the same step to metrics.jsonl.
        """
        done = self._restored_state or {}
        again = bool(done.get("final")) and int(done.get("step", -1)) == step
        if again and done.get("metrics"):
            metrics = {k: v for k, v in done["metrics"].items() if k != "step"}
        self.save_checkpoint(step, {**metrics, "done": 1}, state=state, final=True,
                             row=not again)

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

    @staticmethod
    def _is_complete(d: Path) -> bool:
        marker = d / COMPLETE_MARKER
        if not marker.exists():
            return False
        try:
            files = json.loads(marker.read_text()).get("files", [])
        except (json.JSONDecodeError, OSError):
            return False
        return all((d / f).exists() for f in files)

    def _newest_complete(self, d: Path) -> Path:
        """`d` if it is complete, else the newest complete checkpoint before it in its run dir.

        A crash while a checkpoint was written leaves a directory without `_COMPLETE`; Ray may
        still hand it out as the latest, so resume falls back rather than failing.
        """
        from orchestrator.errors import CheckpointError

        if self._is_complete(d):
            return d
        siblings = [c for c in d.parent.glob("checkpoint_*")
                    if c.is_dir() and c != d and c.name < d.name and self._is_complete(c)]
        if not siblings:
            raise CheckpointError(
                f"checkpoint {d} is incomplete (no {COMPLETE_MARKER} or missing files) and no "
                f"older complete checkpoint is in {d.parent}; start fresh (orch run SPEC --fresh)"
            )
        chosen = max(siblings, key=lambda c: c.name)
        if self.is_main:
            print(f"[orch] {d.name} is incomplete (half-written?); falling back to {chosen.name}",
                  flush=True)
        return chosen

    def restore(self) -> dict | None:
        """Load model/optimizer/schedule from the latest checkpoint; returns its state or None."""
        from orchestrator.errors import CheckpointError

        with self.latest_checkpoint_dir() as d:
            if d is None:
                # Starting from step 0 (also after a worker-group restart that came before any
                # checkpoint was registered): rows of an earlier attempt would repeat steps.
                self._truncate_metrics(0)
                return None
            d = self._newest_complete(Path(d))
            state = json.loads((d / "state.json").read_text())
            fmt = state.get("format", "torch")
            if fmt != self.checkpoint_format:
                raise CheckpointError(
                    f"checkpoint {d} was written by strategy {state.get('strategy')} "
                    f"({fmt} format); this run uses {self.strategy} ({self.checkpoint_format}). "
                    "Resume with the same strategy, or start fresh (orch run SPEC --fresh)."
                )
            missing = [f for f in json.loads((d / COMPLETE_MARKER).read_text()).get("files", [])
                       if not (d / f).exists()]
            if missing:
                raise CheckpointError(f"checkpoint {d} is missing {', '.join(missing[:5])}")
            try:
                if fmt == "deepspeed":
                    self._load_deepspeed(d, state)
                elif fmt == "dcp":
                    self._load_dcp(d)
                else:
                    self._load_torch(d)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"checkpoint {d} does not fit this model: {str(exc).splitlines()[0]}"
                ) from None
            self.optimizer_steps = state.get("optimizer_steps", 0)
            self.micro_step = state.get("micro_step", 0)
            self._restored_state = state
            self._truncate_metrics(int(state.get("step", 0)))
            self._last_log_step = state.get("step", 0)
            if self.is_main:
                print(f"[orch] resumed from {d.name} at step {state.get('step')} ({fmt})", flush=True)
            return state

    def _load_torch(self, d: Path) -> None:
        import torch

        model_state = torch.load(d / "model.pt", map_location=self.device, weights_only=True)
        self.unwrap().load_state_dict(model_state)
        opt = torch.load(d / "optimizer.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        if self.scaler is not None and opt.get("scaler"):
            self.scaler.load_state_dict(opt["scaler"])

    def _load_dcp(self, d: Path) -> None:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        # Loads into this run's sharding (DCP reshards if the world size changed).
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        target = {"model": model_sd, "optimizer": optim_sd}
        dcp.load(target, checkpoint_id=str(d / "dcp"))
        set_state_dict(self.model, self.optimizer, model_state_dict=target["model"],
                       optim_state_dict=target["optimizer"])
        extra = torch.load(d / "trainer.pt", map_location="cpu", weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        if self.scaler is not None and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])

    def _load_deepspeed(self, d: Path, state: dict) -> None:
        from orchestrator.errors import CheckpointError

        tag = d.name if (d / "deepspeed" / d.name).is_dir() else None
        if tag is None:
            tags = sorted(p.name for p in (d / "deepspeed").glob("checkpoint_*") if p.is_dir())
            if not tags:
                raise CheckpointError(f"checkpoint {d} holds no DeepSpeed engine checkpoint")
            tag = tags[-1]
        saved_world = int(state.get("world_size", self.world_size))
        if saved_world != self.world_size:
            raise CheckpointError(
                f"DeepSpeed checkpoint {d} was written by {saved_world} workers, this run has "
                f"{self.world_size}; resume with resources.workers={saved_world}"
            )
        path, _client = self.engine.load_checkpoint(
            str(d / "deepspeed"), tag=tag, load_optimizer_states=True,
            load_lr_scheduler_states=True)
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {d / 'deepspeed' / tag}")


def _single_process_group(device) -> None:
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


def _cast_inputs_hook(dtype):
    import torch

    def cast(x):
        return x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x

    def hook(_module, args, kwargs):
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return out


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
