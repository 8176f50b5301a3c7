"""The Session: the one helper every training workload's loop uses, inside Ray Train or alone.

    sess = worker.setup(config)                   # inside Ray Train, or alone (world size 1)
    model, opt, sched = sess.prepare(build_model(args), args, total_steps)
    sess.set_progress(total_steps, metrics=("loss", "accuracy"))  # for orch run's progress
    start = sess.restore()                        # {"step": ..} from the latest checkpoint, or None
    for x, y in loader:
        with sess.autocast():
            loss = F.cross_entropy(model(x), y)
        sess.backward(loss)                       # accumulation, clipping, optimizer + LR step
        sess.log({"loss": loss.item(), "accuracy": acc}, step)  # None (not measured): left out
        if sess.should_checkpoint(step): sess.save_checkpoint(step, {"loss": ..})
    sess.finish({"accuracy": acc}, step)

Every strategy also takes one call per step instead of the forward + backward pair:

    loss = sess.train_step(model, x, y, F.cross_entropy)   # forward, loss, backward, step

which `strategy: pipeline` needs (its schedule runs forward and backward together over the
microbatches; orchestrator/worker/pipeline.py). Under it a worker holds one stage, so data is
split by `sess.data_rank` / `sess.data_world_size` (the replica), not rank / world_size.

`strategy` (ddp | fsdp | deepspeed | pipeline) and `precision` (fp32 | bf16 | fp16) come from
the spec through the WorkerConfig; the workload never writes strategy code of its own. The parts
live beside this module: wrap.py (DDP, FSDP2, DeepSpeed), pipeline.py, precision.py, optim.py,
checkpoint.py (four formats), faults.py (ORCH_FAULTS); metrics.jsonl belongs to
orchestrator/rundir.py.
Inside Ray Train the process group is already set up by TorchTrainer (gloo on CPU, nccl on
GPU); alone it is a single process (or torchrun's group, for side-by-side baselines). A sweep
trial of one CPU worker runs its loop alone too, in the Tune trial's own process
(orchestrator/sweep/trial.py): its rows and checkpoints go to the trial through `reporting_to`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import host, rundir
from orchestrator.worker import checkpoint as ckpt
from orchestrator.worker import precision as prec
from orchestrator.worker import stop, wrap
from orchestrator.worker.config import WorkerConfig
from orchestrator.worker.optim import OptimArgs, build_optimizer, build_scheduler


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Set by a sweep trial that runs its loop in its own process (no Ray Train): each logged row
# (with None) and each checkpoint (with where it is stored) is handed to it, as a Train run's
# reports reach Tune through the controller. One trial at a time runs in a process.
_trial_reporter: Callable[[dict[str, Any], str | None], None] | None = None


@contextlib.contextmanager
def reporting_to(reporter: Callable[[dict[str, Any], str | None], None]) -> Iterator[None]:
    """Sessions set up inside this block report to `reporter(row, checkpoint_or_None)`."""
    global _trial_reporter
    _trial_reporter = reporter
    try:
        yield
    finally:
        _trial_reporter = None


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
    config: dict[str, Any] = field(default_factory=dict)  # the WorkerConfig, as a dict

    model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    args: OptimArgs | None = None
    micro_step: int = 0
    optimizer_steps: int = 0
    restored_state: dict | None = None  # state.json of the checkpoint restore() loaded
    engine: Any = None  # the DeepSpeed engine, under strategy deepspeed
    fsdp: bool = False  # True once the model is wrapped with fully_shard
    pipeline: Any = None  # the PipelineModel, under strategy pipeline
    data_rank: int = 0  # which part of the data this process reads: rank, or its replica
    data_world_size: int = 1  # in how many parts the data is read: world size, or replicas
    _last_log_time: float = field(default_factory=time.perf_counter)
    _last_log_step: int = 0
    _writer: Any = None  # rundir.MetricsWriter of a URI run dir (rank 0)
    progress: dict[str, Any] = field(default_factory=dict)  # set_progress(): for the driver
    stopping: bool = False  # the driver asked for a checkpoint and a stop (worker/stop.py)
    _listening: bool = False
    reporter: Any = None  # a sweep trial in its own process: see reporting_to()

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
        return prec.autocast(self.precision, self.device.type, self.engine is not None)

    # -- wrapping ------------------------------------------------------------------------

    def prepare(self, model, args: OptimArgs, total_steps: int, params=None, fsdp_wrap=None):
        """Move and wrap the model for the strategy; build optimizer and LR schedule.

        Returns (model, optimizer, scheduler). Use the returned model for forward passes.
        `total_steps` counts optimizer steps (for the LR schedule). `fsdp_wrap` (or the
        workload module's FSDP_WRAP) picks the modules FSDP shards as units: layer classes
        or their names, or a function model -> list of modules; default: each child module
        that holds parameters.
        """
        self.args = args
        model = model.to(self.device)
        if self.strategy == "pipeline":
            from orchestrator.worker import pipeline

            model = pipeline.build(
                model, self._workload_module(), self.rank, self.world_size, self.pipeline_settings
            )
            self.pipeline = model
            # Each stage's parameters are plain tensors, as under DDP: the fused kernels.
            optimizer = build_optimizer(params or model.parameters(), args, fused=True)
            self.model, self.optimizer = model, optimizer
            self.scheduler = build_scheduler(self.optimizer, args, total_steps)
            return model, self.optimizer, self.scheduler
        if self.strategy == "deepspeed":
            cfg = wrap.deepspeed_config(
                self.config.get("deepspeed_config"),
                self.deepspeed,
                self.config.get("train") or {},
                args,
                self.precision,
                self.world_size,
            )
            self.engine, self.optimizer, self.scheduler, self.args = wrap.init_deepspeed(
                model, args, total_steps, cfg, self.precision, self.device, params
            )
            self.model = self.engine
            return self.engine, self.optimizer, self.scheduler
        if self.strategy == "fsdp" and wrap.distributed():
            model = wrap.wrap_fsdp(
                model,
                self.device.type,
                self.world_size,
                self.precision,
                fsdp_wrap if fsdp_wrap is not None else self._fsdp_wrap(),
            )
            self.fsdp = True
            optimizer = build_optimizer(params or model.parameters(), args)
        elif self.strategy in ("ddp", "auto", "fsdp"):
            # fsdp on one process without a process group: nothing to shard.
            if self.world_size > 1:
                model = wrap.wrap_ddp(model, self.device, self.local_rank)
            optimizer = build_optimizer(params or model.parameters(), args, fused=True)
        else:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected ddp, fsdp or deepspeed")
        self.scaler = prec.grad_scaler(self.precision, self.device.type)
        self.model, self.optimizer = model, optimizer
        self.scheduler = build_scheduler(optimizer, args, total_steps)
        return model, optimizer, self.scheduler

    def _workload_module(self):
        if not self.config.get("workload"):
            return None
        from orchestrator.spec import import_workload

        return import_workload(self.config["workload"])

    def _fsdp_wrap(self):
        """The workload module's FSDP_WRAP, if it has one."""
        return getattr(self._workload_module(), "FSDP_WRAP", None)

    @property
    def pipeline_settings(self) -> dict[str, Any]:
        return dict(self.config.get("pipeline") or {})

    def unwrap(self, model=None):
        model = model if model is not None else self.model
        return getattr(model, "module", model)

    # -- stepping ------------------------------------------------------------------------

    def train_step(self, model, x, y, loss_fn, reduction: str = "mean"):
        """One training step on a batch: forward, `loss_fn(output, y)`, backward and (every
        `grad_accum` calls) the optimizer step. Returns the loss, detached.

        The same for every strategy; under `pipeline` the schedule runs the microbatches
        through the stages and the loss comes back to every rank of the replica. `reduction`
        says how `loss_fn` reduces a batch, so microbatch losses combine to the batch's:
        "mean" (a mean over its examples: averaged) or "sum" (a sum: added)."""
        if self.pipeline is not None:
            loss = self.pipeline.train_step(x, y, loss_fn, mean=reduction == "mean")
            self.micro_step += 1
            if self.args.grad_clip:
                self.pipeline.clip_grad_norm_(self.args.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.optimizer_steps += 1
            return loss
        with self.autocast():
            loss = loss_fn(model(x), y)
        self.backward(loss)
        return loss.detach()

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
        """Sums over the data-parallel workers. Under `pipeline` every rank of a replica holds
        the same batches (and the replica's loss), so each replica counts once: the sum over
        all ranks divided by the stages."""
        import torch

        if self.world_size == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if self.data_world_size != self.world_size:
            t /= self.world_size // self.data_world_size
        return t.tolist()

    def all_gather_object(self, obj: Any) -> list[Any]:
        if self.world_size == 1 or not wrap.distributed():
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # -- metrics -------------------------------------------------------------------------

    def throughput(self, step: int, samples_per_step: int) -> dict[str, float]:
        """Samples/s and step time since the last call (global, across workers)."""
        now = time.perf_counter()
        steps = max(1, step - self._last_log_step)
        dt = max(1e-9, now - self._last_log_time)
        self._last_log_time, self._last_log_step = now, step
        return {
            "samples_per_s": steps * samples_per_step * self.data_world_size / dt,
            "step_time_s": dt / steps,
        }

    def mark_logged(self, step: int) -> None:
        """Throughput counts from `step` (a resumed run)."""
        self._last_log_step = step

    def set_progress(self, total_steps: int | None = None, metrics: Sequence[str] = ()) -> None:
        """Tell the driver how many steps the run takes and which metrics its rows carry:
        `orch run` then shows step/total, rate and ETA, and `-` for an expected metric not
        measured yet (accuracy before the first evaluation). Call it before restore(): the
        record of this start of the worker group carries it. Optional."""
        self.progress = {
            **({"total_steps": int(total_steps)} if total_steps else {}),
            **({"metrics": [str(m) for m in metrics]} if metrics else {}),
        }

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record metrics for `step` (no checkpoint). Every worker calls this; rank 0 writes.
        A metric given as None (not measured yet) is left out of the row and the report.

        Rank 0 writes the run directory's metrics itself, never through ray.train.report: a
        Ray Train report is a barrier whose result queue the controller drains every couple of
        seconds, so reporting every few steps would stall training (about 20x here). A local
        (or NFS) run dir gets a line appended per row; a URI run dir gets the rows in chunks,
        one object every few seconds (rundir.MetricsWriter). Sweep trials also report every
        row to Ray, since Tune's schedulers decide on them.
        """
        metrics = {**ckpt.plain(metrics), "step": step}
        if self.reporter is not None:
            self.reporter(metrics, None)
        elif self.in_ray and self.config.get("report_metrics_to_ray", False):
            import ray.train

            ray.train.report(metrics)
        if self.is_main:
            self.append_row(metrics)

    @property
    def local_run_dir(self) -> bool:
        """Whether the run directory is a local (or mounted) folder, not a URI."""
        return bool(self.run_dir) and not rundir.is_uri(self.run_dir)

    def append_row(self, row: dict[str, Any]) -> None:
        """One metrics row (alone, also printed)."""
        row = {**row, "time": time.time()}
        if self.local_run_dir:
            rundir.append_metrics(self.run_dir, row)
        elif self.run_dir:
            if self._writer is None:
                self._writer = rundir.MetricsWriter(self.run_dir)
            self._writer.add(row)
        if not self.in_ray and self.reporter is None:  # alone: the row is the output
            print(json.dumps(row, default=float), flush=True)

    def flush_rows(self) -> None:
        """Rows buffered for a URI run dir are written now (at checkpoints and the end)."""
        if self._writer is not None:
            self._writer.flush()

    def truncate_rows(self, after_step: int) -> None:
        """On resume, drop rows past the checkpoint: those steps run again."""
        if not (self.is_main and self.run_dir):
            return
        if self.local_run_dir:
            rundir.truncate_metrics(self.run_dir, after_step)
        else:
            if self._writer is None:
                self._writer = rundir.MetricsWriter(self.run_dir)
            self._writer.truncate(after_step)

    # -- attempts ------------------------------------------------------------------------

    def record_attempt(self, resumed_step: int | None, resumed_from: str | None = None) -> bool:
        """Rank 0 records this start of the worker group: where every rank runs (Ray node id,
        host) and the step (and checkpoint, "checkpoint_000040 (torch)") it resumed from; the
        driver reads it into the summary, the ledger and its "resumed from" line (restarts
        after a lost node, placement). A collective: every rank calls it. False when there is
        no driver to read it (no run id)."""
        if not (self.run_dir and self.config.get("run_id")):
            return False
        node_id = None
        if self.in_ray or self.reporter is not None:
            import ray

            if ray.is_initialized():  # get_runtime_context() would start a Ray of its own
                node_id = ray.get_runtime_context().get_node_id()
        import socket

        me = {
            "rank": self.rank,
            "node_id": node_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            # Start-up stamps (epoch seconds): the worker process began, its train function
            # was entered, and now (model, data, process group and restore done).
            "t_process": host.process_start(),
            "t_entry": _float_env("ORCH_T_ENTRY"),
            "t_ready": time.time(),
        }
        everyone = self.all_gather_object(me)
        if self.is_main:
            rundir.record_attempt(
                self.run_dir,
                self.config["run_id"],
                {
                    "resumed_from_step": resumed_step,
                    "resumed_from": resumed_from,
                    "workers": everyone,
                    **self.progress,
                },
            )
        return True

    # -- checkpoints ---------------------------------------------------------------------

    def should_checkpoint(self, step: int) -> bool:
        """True every `checkpoint.every_steps` steps. Workloads call it once per step, which
        is also where ORCH_FAULTS injects a failure (orchestrator/worker/faults.py)."""
        if self.config.get("faults"):
            from orchestrator.worker import faults

            faults.maybe_fail(self.config["faults"], step, self.rank, self.run_dir)
        if self._stop_asked(step):
            return True
        return step > 0 and step % self.checkpoint_every == 0

    def _stop_asked(self, step: int) -> bool:
        """Has the driver been told to stop (SIGTERM) and asked for a checkpoint first? Every
        stop.POLL_STEPS steps rank 0 looks, and every rank takes its answer, so all of them
        checkpoint the same step (orchestrator/worker/stop.py)."""
        if not self.in_ray or not self.run_dir:
            return False
        if not self._listening:
            self._listening = True
            if self.is_main:
                stop.listen(self.run_dir)
        if step <= 0 or step % stop.POLL_STEPS:
            return False
        asked = 1.0 if self.is_main and stop.requested(self.run_dir) else 0.0
        if self.world_size > 1 and wrap.distributed():
            import torch
            import torch.distributed as dist

            t = torch.tensor([asked], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            asked = float(t.item())
        self.stopping = asked > 0
        return self.stopping

    @property
    def checkpoint_format(self) -> str:
        return ckpt.checkpoint_format(self)

    def save_checkpoint(
        self,
        step: int,
        metrics: dict[str, Any],
        state: dict | None = None,
        final: bool = False,
        row: bool = True,
    ) -> None:
        """Write and report a checkpoint (a collective: every worker calls it);
        orchestrator/worker/checkpoint.py."""
        ckpt.save(self, step, metrics, state=state, final=final, row=row)
        if self.stopping and not final:
            # The checkpoint the driver asked for is saved (and reported): say so, and wait to
            # be ended with the run; training on would only be lost.
            if self.is_main:
                stop.confirm(self.run_dir, step)
                print(f"[orch] checkpoint at step {step} saved for the stop", flush=True)
            while True:
                time.sleep(1.0)

    def restore(self) -> dict | None:
        """Load the latest checkpoint; returns its state, or None for a fresh start."""
        return ckpt.restore(self)

    def finish(self, metrics: dict[str, Any], step: int, state: dict | None = None) -> None:
        """Final report: always with a checkpoint, so Ray's Result carries these metrics.

        A run resumed from its own final checkpoint (its driver died after training had
        ended) trains nothing: it reports that checkpoint's metrics again, and adds no second
        row for the same step to metrics.jsonl.
        """
        done = self.restored_state or {}
        again = bool(done.get("final")) and int(done.get("step", -1)) == step
        if again and done.get("metrics"):
            metrics = {k: v for k, v in done["metrics"].items() if k != "step"}
        self.save_checkpoint(step, {**metrics, "done": 1}, state=state, final=True, row=not again)


def setup(config: dict[str, Any]) -> Session:
    """The Session of this process, from the config `orch run` passes to workers (a
    WorkerConfig as a dict; orchestrator/worker/config.py). Validated here, once."""
    cfg = WorkerConfig.model_validate(config)
    reporter = _trial_reporter
    in_ray = reporter is None and _in_ray_train()
    rank, world, local = 0, 1, 0
    if in_ray:
        import ray.train

        ctx = ray.train.get_context()
        rank, world, local = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun, for side-by-side baselines
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cfg.use_gpu else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", "0"))
    seed_everything(cfg.seed)  # the same on every rank: identical initial weights
    stages = int(cfg.pipeline.get("stages", 1)) if cfg.strategy == "pipeline" else 1
    if world % stages:  # the spec's validation says so first; a hand-made config may not
        raise ValueError(f"{world} workers are not a multiple of pipeline.stages={stages}")
    return Session(
        strategy=cfg.strategy,
        precision=cfg.precision,
        rank=rank,
        world_size=world,
        local_rank=local,
        data_rank=rank // stages,
        data_world_size=world // stages,
        in_ray=in_ray,
        checkpoint_every=cfg.checkpoint.every_steps,
        seed=cfg.seed,
        run_dir=cfg.run_dir,
        deepspeed=dict(cfg.deepspeed),
        config=cfg.to_dict(),
        reporter=reporter,
    )


def distributed_sampler(dataset, sess: Session, shuffle: bool = True, drop_last: bool = False):
    """A sampler that gives each worker a disjoint part of the dataset, reshuffled per epoch."""
    from torch.utils.data import DistributedSampler

    return DistributedSampler(
        dataset,
        num_replicas=sess.data_world_size,
        rank=sess.data_rank,
        shuffle=shuffle,
        seed=sess.seed,
        drop_last=drop_last,
    )


def _float_env(name: str) -> float | None:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return None
