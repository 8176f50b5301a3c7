"""WorkerConfig: what the driver hands every training process, typed.

The driver builds it once, in `orchestrator.plan.plan()` (`RunPlan.worker`), and Ray Train
passes it to each worker as `train_loop(config)`, a plain dict (`WorkerConfig.model_dump()`),
so a workload reads it like nanoGPT reads its config (`config["train"]`, `config["data"]`)
while `worker.setup(config)` validates the whole of it. A workload run alone
(`python jobs/mnist_mlp.py`, orchestrator/worker/standalone.py) builds one from its flags.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CheckpointSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_steps: int = Field(100, ge=1, description="Save a checkpoint every N steps.")
    keep: int = Field(2, ge=1, description="Checkpoints to keep.")


class WorkerConfig(BaseModel):
    """The config of one run's workers (or of an RLlib run's driver-side loop)."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field("", description="The spec's workload (mnist_mlp, mypkg.mytrain, ...).")
    workload_path: str | None = Field(
        None, description="Where the workers find it (a sys.path entry; orchestrator/workloads.py)."
    )
    run_name: str = ""
    run_id: str = Field("", description="The launch this config belongs to (ledger run_id).")
    launch_dir: str | None = Field(
        None,
        description="The folder `orch run` started in, as the workers see it "
        "(orchestrator/workloads.py: worker_path); a script workload runs there.",
    )
    run_dir: str | None = Field(
        None, description="Where rank 0 writes metrics.jsonl; None: nowhere."
    )
    train: dict[str, Any] = Field(default_factory=dict, description="The workload's Args.")
    data: dict[str, Any] = Field(default_factory=dict, description="The workload's DataArgs.")
    seed: int = 0
    strategy: Literal["ddp", "fsdp", "deepspeed", "pipeline", "auto"] = "ddp"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    use_gpu: bool = False
    deepspeed: dict[str, Any] = Field(default_factory=dict, description="The spec's section.")
    deepspeed_config: dict[str, Any] | None = Field(None, description="The resolved DS config.")
    pipeline: dict[str, Any] = Field(
        default_factory=dict, description="The spec's pipeline section (strategy: pipeline)."
    )
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    resume_from: str | None = Field(
        None,
        description="A checkpoint to start from when Ray hands none (a Tune checkpoint, "
        "an RLlib resume, a run alone).",
    )
    report_metrics_to_ray: bool = Field(
        False, description="Every log is also a ray.train.report (sweep trials: Tune sees it)."
    )
    faults: dict[str, Any] | None = Field(None, description="ORCH_FAULTS for this run.")
    # RLlib workloads: how resources map onto EnvRunners (orchestrator/launch/rllib.py).
    num_env_runners: int = 0
    cpus_per_env_runner: float = 1.0
    gpus_per_learner: float = 0.0
    max_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        """What travels to the workers (Ray's train_loop_config is a dict)."""
        return self.model_dump(mode="json")
