"""What to do to a trained model: the `compress:` section of a job spec and `orch compress`'s
flags, validated by one pydantic model.

    compress: {prune: 0.9, finetune_steps: 300, quantize: int8, export: [onnx]}

`CompressSpec` is the model (`orch validate` checks a spec's section through it, named in
orchestrator.spec.SECTION_MODELS); `parse_spec` turns a dict into one or raises SpecError
naming each bad field; `CompressError` is the error every stage raises when it cannot run as
asked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import ExitCode, OrchestratorError


class CompressError(OrchestratorError):
    """A compression stage cannot run as asked (missing hook, bad checkpoint, failed export)."""

    exit_code = ExitCode.FAILED


class CompressInputError(CompressError):
    """Compression asked for something the model or workload cannot give (no matching layer,
    no calibration set or example inputs): fix the spec or the workload."""

    exit_code = ExitCode.BAD_INPUT


class CompressSpec(BaseModel):
    """What to do to a trained model. Every stage is optional; they run in the order below."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    low_rank: float | None = Field(
        None, gt=0, le=1, description="Keep this fraction of each Linear's full rank (0.5 = half)."
    )
    low_rank_energy: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Or: the smallest rank keeping this fraction of the squared singular values.",
    )
    prune: float | None = Field(None, gt=0, lt=1, description="Fraction of weights to remove.")
    structured: bool = Field(
        False, description="Remove whole neurons/channels (L1 norm per layer) instead of weights."
    )
    finetune_steps: int = Field(0, ge=0, le=10**7, description="Training steps after pruning.")
    finetune_lr: float = Field(1e-4, gt=0, le=1, description="Adam learning rate for fine-tuning.")
    finetune_batch_size: int = Field(64, ge=1, le=65_536, description="Fine-tuning batch size.")
    quantize: Literal["int8"] | None = Field(None, description="int8 quantization.")
    quantize_mode: Literal["auto", "dynamic", "static"] = Field(
        "auto", description="auto: static for conv nets with a calibration set, else dynamic."
    )
    calibration_batches: int = Field(8, ge=1, le=10_000, description="Batches for static int8.")
    export: list[Literal["onnx", "pt2", "torchscript"]] = Field(
        default_factory=list,
        description="Export formats, checked against the PyTorch model: onnx (torch.onnx, "
        "dynamo), pt2 (torch.export); torchscript is an old name that now writes pt2.",
    )
    onnx_atol: float = Field(1e-4, gt=0, description="Largest ONNX-vs-PyTorch difference allowed.")
    layers: list[str] = Field(
        default_factory=list, description="Module-name globs to compress (default: all it can)."
    )
    exclude: list[str] = Field(default_factory=list, description="Module-name globs to leave.")
    latency_repeats: int = Field(20, ge=1, le=10_000, description="Timed batches per latency.")
    out: str | None = Field(None, description="Output folder (default <run_dir>/compress_<time>).")

    @model_validator(mode="after")
    def _consistent(self) -> CompressSpec:
        if self.low_rank is not None and self.low_rank_energy is not None:
            raise ValueError("set low_rank (a rank ratio) or low_rank_energy, not both")
        if self.structured and self.prune is None:
            raise ValueError("structured: true needs prune: <fraction> (e.g. prune: 0.5)")
        if self.finetune_steps and self.prune is None and not self.wants_low_rank:
            raise ValueError("finetune_steps recovers accuracy after prune or low_rank; set one")
        if not (self.wants_low_rank or self.prune or self.quantize or self.export):
            raise ValueError(
                "nothing to do: set prune, low_rank, low_rank_energy, quantize or export"
            )
        return self

    @property
    def wants_low_rank(self) -> bool:
        return self.low_rank is not None or self.low_rank_energy is not None


def parse_spec(data: dict[str, Any], source: str = "compress") -> CompressSpec:
    """Validate a compress section/flags dict; raise SpecError naming each bad field."""
    from orchestrator.errors import SpecError
    from orchestrator.spec import pydantic_errors

    try:
        return CompressSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(pydantic_errors(exc, CompressSpec, prefix="compress"), source) from None
