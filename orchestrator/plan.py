"""plan(spec) -> RunPlan: every `auto` resolved, nothing started.

    orch plan jobs/mnist_mlp.yaml resources.workers=4

The plan is pure apart from reading what is already on disk (the run directory of a previous
run with the same name, to say whether this run resumes). Launchers turn it into Ray objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import CheckpointError
from orchestrator.spec import JobSpec, import_workload


@dataclass
class RunPlan:
    spec: JobSpec
    run_name: str
    storage_path: str  # absolute, or a URI (s3://, gs://)
    run_dir: str
    kind: str  # "train" (Ray Train) or "rllib"
    num_workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]
    backend: str  # gloo | nccl
    strategy: str
    precision: str
    resumes_from: str | None = None
    notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    deepspeed_config: dict[str, Any] | None = None
    cluster_config: str | None = None  # a `ray up` YAML whose node types bound what can fit

    def worker_config(self) -> dict[str, Any]:
        """The dict every Ray Train worker's train_loop(config) receives."""
        s = self.spec
        return {
            "train": dict(s.train),
            "data": dict(s.data),
            "strategy": self.strategy,
            "precision": self.precision,
            "deepspeed": s.deepspeed.model_dump(mode="json"),
            "deepspeed_config": self.deepspeed_config,
            "checkpoint": s.checkpoint.model_dump(mode="json"),
            "seed": s.seed,
            "run_dir": self.run_dir,
            "run_name": self.run_name,
            "use_gpu": self.use_gpu,
            "workload": s.workload,
        }

    def summary(self) -> dict[str, Any]:
        d = {
            "run_name": self.run_name,
            "run_dir": self.run_dir,
            "workload": self.spec.workload,
            "kind": self.kind,
            "workers": self.num_workers,
            "resources_per_worker": self.resources_per_worker,
            "use_gpu": self.use_gpu,
            "backend": self.backend,
            "strategy": self.strategy,
            "precision": self.precision,
            "resumes_from": self.resumes_from or "nothing (fresh run)",
            "checkpoint": self.spec.checkpoint.model_dump(),
            "max_failures": self.spec.failure.max_failures,
            "spec_hash": self.spec.spec_hash(),
        }
        if self.memory:  # its "table" is printed under the plan by `orch plan`
            d["memory"] = {k: v for k, v in self.memory.items() if k != "table"}
        if self.deepspeed_config:
            d["deepspeed_config"] = self.deepspeed_config
        if self.notes:
            d["notes"] = self.notes
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.summary(), sort_keys=False)


def _is_uri(path: str) -> bool:
    return "://" in path


def resolve_storage(storage_path: str, base: Path | None = None) -> str:
    if _is_uri(storage_path):
        return storage_path
    p = Path(storage_path).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return str(p.resolve())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest complete checkpoint_NNNNNN directory of a run, or None."""
    from orchestrator.strategy import COMPLETE_MARKER

    d = Path(run_dir)
    if not d.is_dir():
        return None
    done = [c for c in d.glob("checkpoint_*") if c.is_dir() and (c / COMPLETE_MARKER).exists()]
    return max(done, key=lambda c: c.name) if done else None


def check_same_model(spec: JobSpec, run_dir: str | Path) -> None:
    """Refuse to resume a run whose saved spec has another model shape."""
    saved = Path(run_dir) / "spec.resolved.yaml"
    if not saved.exists():
        return
    old = yaml.safe_load(saved.read_text()) or {}
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


def plan(
    spec: JobSpec, run_name: str | None = None, fresh: bool = False, memory: bool | None = None
) -> RunPlan:
    """Resolve `spec` into a RunPlan; starts nothing.

    memory: build the memory table (the model on the meta device, a meta forward for the
    activations). None, the default: only where something depends on it, i.e. `strategy: auto`
    or GPU workers (the over-budget warning); a CPU run with a named strategy skips it, since
    the first meta forward in a process costs ~1 CPU-s (torch's decompositions and meta
    registrations load lazily; bench/plan_cost.py), paid by every `orch run` and sweep trial.
    `orch plan` passes True.
    """
    mod = import_workload(spec.workload)
    kind = getattr(mod, "KIND", "train")
    name = run_name or spec.name
    if fresh:
        name = f"{name}__{time.strftime('%Y%m%d-%H%M%S')}"
    storage = resolve_storage(spec.storage_path)
    run_dir = f"{storage.rstrip('/')}/{name}"
    res = spec.resources
    use_gpu = res.gpus_per_worker > 0
    per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = res.gpus_per_worker
    strategy = spec.strategy
    notes: list[str] = []
    if memory is None:
        memory = strategy == "auto" or use_gpu
    summary = None
    ds_config = None
    try:  # the memory planner and DeepSpeed config come with the strategies module
        from orchestrator import memory as memory_mod
    except ImportError:
        memory_mod = None
    if memory and memory_mod is not None and kind == "train" and hasattr(memory_mod, "plan_memory"):
        summary, strategy, why = memory_mod.plan_memory(spec, mod)
        if why:
            notes.append(why)
    elif strategy == "auto":
        strategy = "ddp"
        notes.append("strategy auto -> ddp (no memory planner available)")
    if strategy == "deepspeed":
        from orchestrator import deepspeed_config

        ds_config = deepspeed_config.build(spec)
    resumes = None
    if not _is_uri(run_dir):
        ck = latest_checkpoint(run_dir)
        resumes = str(ck) if ck else None
        if resumes:
            check_same_model(spec, run_dir)
    return RunPlan(
        spec=spec,
        run_name=name,
        storage_path=storage,
        run_dir=run_dir,
        kind=kind,
        num_workers=res.workers,
        use_gpu=use_gpu,
        resources_per_worker=per_worker,
        backend="nccl" if use_gpu else "gloo",
        strategy=strategy,
        precision=spec.precision,
        resumes_from=resumes,
        notes=notes,
        memory=summary,
        deepspeed_config=ds_config,
    )
