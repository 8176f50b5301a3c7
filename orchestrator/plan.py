"""plan(spec) -> RunPlan: every `auto` resolved, nothing started.

    orch plan jobs/mnist_mlp.yaml resources.workers=4   # this plan and the Ray objects it becomes

The plan is pure apart from reading what is already there (the run directory of a previous
run with the same name, local or in a bucket, to say whether this run resumes; that the
storage path answers; a `--cluster-config` YAML) and the `ORCH_FAULTS` variable. It carries
everything a launcher needs: the launchers (orchestrator/launch/) build Ray's objects from it
and never go back to the spec.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator import rundir, workloads
from orchestrator.errors import CheckpointError, FieldError, SpecError
from orchestrator.spec import JobSpec, import_workload
from orchestrator.spec import per_worker as spec_per_worker
from orchestrator.worker.config import WorkerConfig


@dataclass(frozen=True)
class EnvRunners:
    """How an RLlib run's resources map onto RLlib (orchestrator/launch/rllib.py)."""

    num_env_runners: int  # 0: the driver samples too
    cpus_per_env_runner: float
    gpus_per_learner: float
    max_failures: int  # EnvRunner restarts


@dataclass
class RunPlan:
    run_name: str
    run_id: str  # this launch: `<run name>-<8 hex>`, the ledger's run_id
    run_dir: str  # an absolute path or a URI (rundir.is_uri)
    storage_path: str  # absolute, or a URI (s3://, gs://)
    workload: str
    kind: str  # "train" (Ray Train) or "rllib"
    spec_hash: str
    resolved_spec: dict[str, Any]  # spec.resolved.yaml of the run directory
    num_workers: int
    resources_per_worker: dict[str, float]
    use_gpu: bool
    backend: str  # gloo | nccl
    strategy: str
    precision: str
    checkpoint_every: int
    checkpoint_keep: int
    max_failures: int
    worker: WorkerConfig  # what every worker's train_loop(config) receives
    env_runners: EnvRunners | None = None  # RLlib runs only
    resumes_from: str | None = None
    resumes_from_step: int | None = None  # the step (RLlib: env steps) of resumes_from
    cluster_config: str | None = None  # a `ray up` YAML whose node types bound what can fit
    compress: dict[str, Any] | None = None  # the spec's compress: section, run after training
    tracking: dict[str, Any] | None = None  # the spec's tracking: section
    trial: bool = False  # a sweep trial (orchestrator/sweep/trial.py)
    notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    deepspeed_config: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None  # strategy pipeline: stages, parameters, bubble

    def summary(self) -> dict[str, Any]:
        d = {
            "run_name": self.run_name,
            "run_dir": self.run_dir,
            "workload": self.workload,
            "kind": self.kind,
            "workers": self.num_workers,
            "resources_per_worker": self.resources_per_worker,
            "use_gpu": self.use_gpu,
            "backend": self.backend,
            "strategy": self.strategy,
            "precision": self.precision,
            "resumes_from": self.resumes_from or "nothing (fresh run)",
            "checkpoint": {"every_steps": self.checkpoint_every, "keep": self.checkpoint_keep},
            "max_failures": self.max_failures,
            "spec_hash": self.spec_hash,
        }
        if self.env_runners is not None:
            d["env_runners"] = dict(self.env_runners.__dict__)
        if self.memory:  # its "table" is printed under the plan by `orch plan`
            d["memory"] = {k: v for k, v in self.memory.items() if k != "table"}
        if self.deepspeed_config:
            d["deepspeed_config"] = self.deepspeed_config
        if self.pipeline:  # its "table" is printed under the plan by `orch plan`
            d["pipeline"] = {k: v for k, v in self.pipeline.items() if k != "table"}
        elif self.strategy == "pipeline":
            d["pipeline"] = dict(self.worker.pipeline)
        if self.worker.faults:
            d["faults"] = self.worker.faults
        if self.notes:
            d["notes"] = self.notes
        return d

    def to_yaml(self, ray: dict[str, Any] | None = None) -> str:
        """The plan as YAML; `ray`: the Ray objects it becomes (orchestrator.launch.describe)."""
        d = self.summary()
        if ray:
            d["ray"] = ray
        return yaml.safe_dump(d, sort_keys=False)


def check_same_model(spec: JobSpec, run_dir: str) -> None:
    """Refuse to resume a run whose saved spec has another model shape."""
    try:
        old = yaml.safe_load(rundir.read_text(rundir.join(run_dir, rundir.SPEC_FILE))) or {}
    except FileNotFoundError:
        return
    if old.get("workload") != spec.workload:
        raise CheckpointError(
            f"run '{spec.name}' in {run_dir} was a '{old.get('workload')}' job, this spec is "
            f"'{spec.workload}'. Choose another name (orch run SPEC --fresh, or name=...)."
        )
    mod = import_workload(spec.workload)
    changed = []
    for key in getattr(mod, "SHAPE_KEYS", ()):
        before, after = (old.get("train") or {}).get(key), spec.train.get(key)
        if before != after:
            changed.append(f"train.{key}: {before!r} -> {after!r}")
    if changed:
        raise CheckpointError(
            f"cannot resume run '{spec.name}' from {run_dir}: the model shape differs from its "
            f"checkpoints ({'; '.join(changed)}). Start a new run with --fresh or another name."
        )
    if old.get("strategy") == "pipeline" and spec.strategy == "pipeline":
        was, now = old.get("pipeline") or {}, spec.pipeline
        parts = {"stages": (was.get("stages"), now.stages)}
        chunked = {"interleaved": 2}
        parts["chunks per worker"] = (
            chunked.get(str(was.get("schedule")), 1),
            chunked.get(now.schedule, 1),
        )
        parts["split_points"] = (was.get("split_points"), now.split_points)
        differ = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in parts.items() if a != b]
        if differ:
            raise CheckpointError(
                f"cannot resume run '{spec.name}' from {run_dir}: its checkpoints hold "
                f"{was.get('stages')} pipeline stages cut another way ({'; '.join(differ)}). "
                f"Resume with pipeline.stages={was.get('stages')} (and schedule "
                f"{was.get('schedule')}), or start a new run with --fresh or another name."
            )


def env_runners(spec: JobSpec) -> EnvRunners:
    """RLlib: resources.workers 1 -> the driver samples (num_env_runners=0); N > 1 -> N remote
    EnvRunners of cpus_per_worker each; gpus_per_worker -> the Learner's GPUs;
    failure.max_failures -> EnvRunner restarts."""
    res = spec.resources
    return EnvRunners(
        num_env_runners=0 if res.workers <= 1 else res.workers,
        cpus_per_env_runner=res.cpus_per_worker,
        gpus_per_learner=res.gpus_per_worker,
        max_failures=spec.failure.max_failures,
    )


def _rllib_errors(spec: JobSpec) -> list[FieldError]:
    """Spec choices that mean nothing for an RLlib job are errors, not silent no-ops."""
    errors = []
    if spec.precision != "fp32":
        errors.append(
            FieldError("precision", "RLlib jobs train in fp32; expected fp32", spec.precision)
        )
    if spec.strategy in ("deepspeed", "fsdp"):
        errors.append(
            FieldError(
                "strategy",
                "RLlib jobs use one local Learner; expected ddp or auto (ignored)",
                spec.strategy,
            )
        )
    return errors


def plan(
    spec: JobSpec,
    run_name: str | None = None,
    fresh: bool = False,
    memory: bool | None = None,
    *,
    cluster_config: str | None = None,
    trial: bool = False,
    resume_from: str | None = None,
    faults: str | None = None,
) -> RunPlan:
    """Resolve `spec` into a RunPlan; starts nothing.

    memory: build the memory table (the model on the meta device, a meta forward for the
    activations). None, the default: only where something depends on it, i.e. `strategy: auto`
    or GPU workers (the over-budget warning); a CPU run with a named strategy skips it, since
    the first meta forward in a process costs ~1 CPU-s (torch's decompositions and meta
    registrations load lazily; bench/plan_cost.py), paid by every `orch run` and sweep trial.
    `orch plan` passes True.

    cluster_config: a `ray up` YAML; a worker no node type of it can hold is refused here,
    before anything starts (the launch checks the live cluster only without one).
    trial: a sweep trial's run (every log is also reported to Tune). resume_from: start from
    this checkpoint (a Tune checkpoint) instead of the run directory's newest one.
    """
    from orchestrator.worker import faults as fault_env  # ORCH_FAULTS, read once per plan

    mod = import_workload(spec.workload)
    kind = getattr(mod, "KIND", "train")
    name = run_name or spec.name
    if fresh:
        name = f"{name}__{time.strftime('%Y%m%d-%H%M%S')}"
    storage = rundir.resolve_storage(spec.storage_path)
    rundir.check_storage(storage)  # an unreachable bucket: one clear error, nothing started
    run_dir = rundir.run_dir(storage, name)
    if kind == "rllib":
        errors = _rllib_errors(spec)
        if errors:
            raise SpecError(errors)
    res = spec.resources
    use_gpu = res.gpus_per_worker > 0
    per_worker = spec_per_worker(res)
    if cluster_config:
        from orchestrator.runtime import check_fits

        check_fits(res.workers, per_worker, cluster_yaml=cluster_config, nodes=[])
    strategy = spec.strategy
    notes: list[str] = []
    if memory is None:
        memory = strategy == "auto" or use_gpu
    summary = None
    if memory and kind == "train" and strategy != "pipeline":  # pipeline: its own table
        from orchestrator import memory as memory_mod

        summary, strategy, why = memory_mod.plan_memory(spec, mod)  # may set spec.deepspeed
        if why:
            notes.append(why)
    elif strategy == "auto":
        strategy = "ddp"
        notes.append("strategy auto -> ddp (no memory table for this plan)")
    pipeline_info = None
    if strategy == "pipeline" and memory:
        from orchestrator.worker import pipeline as pipeline_mod

        pp = spec.pipeline
        pipeline_info = pipeline_mod.plan_stages(
            mod, spec.train, pp.stages, pp.microbatches, pp.schedule, pp.split_points,
            replicas=res.workers // pp.stages,
        )  # fmt: skip
        pipeline_info["table"] = pipeline_mod.render_table(pipeline_info)
    ds_config = None
    if strategy == "deepspeed":
        from orchestrator import extras
        from orchestrator.worker import deepspeed_config

        missing = extras.not_installed("deepspeed")
        if missing:  # `strategy: auto` resolved to it (an explicit one fails validation)
            why = f"{spec.strategy} (resolved to deepspeed)" if spec.strategy != strategy else ""
            raise SpecError(
                [FieldError("strategy", extras.message("deepspeed", why or "deepspeed", missing))]
            )

        ds_config = deepspeed_config.build(spec)

    resumes, resumes_step = None, None
    if resume_from:
        resumes = resume_from
    else:
        resumes = rundir.latest_complete(run_dir)  # local or in the bucket
        if resumes is not None:
            check_same_model(spec, run_dir)
    if resumes:
        state = rundir.read_state(resumes)
        step = state.get("env_steps" if kind == "rllib" else "step")
        if kind == "rllib" and step is None:
            raise CheckpointError(
                f"{resumes}: no state.json; not a checkpoint of this job (start over with --fresh)"
            )
        resumes_step = int(step) if step is not None else None

    runners = env_runners(spec) if kind == "rllib" else None
    run_id = f"{name}-{uuid.uuid4().hex[:8]}"
    train = dict(spec.train)
    if spec.workload == workloads.SCRIPT:  # where the workers find the script
        train["script"] = workloads.worker_path(train["script"])
    worker = WorkerConfig(
        workload=spec.workload,
        workload_path=workloads.location(spec.workload),
        launch_dir=workloads.worker_path(os.getcwd()),
        run_name=name,
        run_id=run_id,
        run_dir=run_dir,
        train=train,
        data=dict(spec.data),
        seed=spec.seed,
        strategy=strategy,
        precision=spec.precision,
        use_gpu=use_gpu,
        deepspeed=spec.deepspeed.model_dump(mode="json"),
        deepspeed_config=ds_config,
        pipeline=spec.pipeline.model_dump(mode="json") if strategy == "pipeline" else {},
        checkpoint=spec.checkpoint.model_dump(mode="json"),
        resume_from=resume_from if kind == "train" else resumes,
        report_metrics_to_ray=trial,
        faults=fault_env.from_env(name, faults),  # game days and reliability tests only
        **(dict(runners.__dict__) if runners else {}),
    )
    return RunPlan(
        run_name=name,
        run_id=run_id,
        run_dir=run_dir,
        storage_path=storage,
        workload=spec.workload,
        kind=kind,
        spec_hash=spec.spec_hash(),
        resolved_spec=spec.to_dict(),
        num_workers=res.workers,
        resources_per_worker=per_worker,
        use_gpu=use_gpu,
        backend="nccl" if use_gpu else "gloo",
        strategy=strategy,
        precision=spec.precision,
        checkpoint_every=spec.checkpoint.every_steps,
        checkpoint_keep=spec.checkpoint.keep,
        max_failures=spec.failure.max_failures,
        worker=worker,
        env_runners=runners,
        resumes_from=resumes,
        resumes_from_step=resumes_step,
        cluster_config=cluster_config,
        compress=spec.compress,
        tracking=spec.tracking,
        trial=trial,
        notes=notes,
        memory=summary,
        deepspeed_config=ds_config,
        pipeline=pipeline_info,
    )
