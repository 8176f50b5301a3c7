"""The job spec: one typed description of a training job, loaded from YAML.

    orch validate jobs/mnist_mlp.yaml                # every error at once, each naming its field
    orch validate jobs/mnist_mlp.yaml train.lr=3e-4  # dotted key=value overrides, YAML-typed
    orch schema > jobspec.schema.json                # JSON Schema for editors

`load_spec(path, overrides)` reads the YAML, applies overrides, validates the spec and the
workload's own `train:` arguments, and raises one `SpecError` that lists every problem with
its dotted path, what was expected and what was given. Nothing else here has side effects.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import FieldError, SpecError

MAX_WORKERS = 4096


class Strict(BaseModel):
    """Base for spec sections: unknown keys are errors, values are not coerced from strings."""

    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True)


class Resources(Strict):
    workers: int = Field(1, ge=1, le=MAX_WORKERS, description="Ray Train workers (processes).")
    cpus_per_worker: float = Field(1.0, ge=0.0001, le=1024, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(0.0, ge=0, le=64, description="GPUs per worker; 0 for CPU.")
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        le=4096,
        description="Memory of one GPU, for the memory planner (strategy: auto).",
    )


def per_worker(resources) -> dict[str, float]:
    """What one worker asks Ray for: {CPU: n}, and GPU when it uses any (`resources`: the
    spec's resources, or a sweep's per-trial ones)."""
    out = {"CPU": float(resources.cpus_per_worker)}
    if resources.gpus_per_worker > 0:
        out["GPU"] = float(resources.gpus_per_worker)
    return out


class CheckpointSpec(Strict):
    every_steps: int = Field(100, ge=1, le=10**9, description="Save a checkpoint every N steps.")
    keep: int = Field(2, ge=1, le=10**6, description="How many checkpoints to keep.")


class FailureSpec(Strict):
    max_failures: int = Field(
        0, ge=-1, le=10**6, description="Worker-group restarts allowed; -1 for unlimited."
    )


class DeepSpeedSpec(Strict):
    """ZeRO choices; unset fields come from `config_file`, else stage 2 without offload.

    Gradient accumulation and clipping come from `train.grad_accum` / `train.grad_clip`,
    the same for every strategy (orchestrator/worker/deepspeed_config.py maps them)."""

    stage: int | None = Field(None, ge=0, le=3, description="ZeRO stage 0-3 (default 2).")
    offload_optimizer: Literal["none", "cpu"] | None = Field(
        None, description="Optimizer states (and ZeRO-1/2 gradients) in CPU memory (default none)."
    )
    offload_param: Literal["none", "cpu"] | None = Field(
        None, description="Parameters in CPU memory; stage 3 only (default none)."
    )
    config_file: str | None = Field(None, description="Your own DeepSpeed JSON, merged with this.")

    @model_validator(mode="after")
    def _offload_param_needs_stage3(self) -> DeepSpeedSpec:
        if self.offload_param not in (None, "none") and self.stage is not None and self.stage != 3:
            raise ValueError(
                f"offload_param: {self.offload_param} needs stage: 3 (given stage: {self.stage})"
            )
        return self


class PipelineSpec(Strict):
    """`strategy: pipeline`: the model's layers cut into stages, one per worker
    (orchestrator/worker/pipeline.py). resources.workers = stages x data-parallel replicas."""

    stages: int = Field(2, ge=2, le=MAX_WORKERS, description="Pipeline stages (workers each).")
    microbatches: int = Field(
        4, ge=1, le=65_536, description="Microbatches each batch is cut into (>= stages)."
    )
    schedule: Literal["gpipe", "1f1b", "interleaved"] = Field(
        "1f1b",
        description="gpipe: all forwards, then all backwards; 1f1b: one forward, one backward "
        "(fewer activations held); interleaved: 1F1B over 2 model chunks per worker.",
    )
    split_points: list[str] | None = Field(
        None,
        description="Names of the blocks that start stages 2..n; default: balanced by "
        "parameter count.",
    )


class QueueSpec(Strict):
    """How `orch submit --queue` orders this job (flags of the same names override these)."""

    name: str = Field("default", min_length=1, description="The queue (orch queue create NAME).")
    priority: int = Field(0, ge=0, le=10**6, description="Higher starts first; may preempt lower.")
    preemptible: bool = Field(
        True, description="May be stopped for a higher-priority job (it resumes later)."
    )
    retries: int = Field(
        0, ge=0, le=1000, description="Times a failed job is run again under the same id."
    )


class JobSpec(Strict):
    """A training job. Every key is described in `orch schema`."""

    name: str = Field(..., min_length=1, max_length=100, description="Run name; reruns resume.")
    workload: str = Field(..., min_length=1, description="A job in jobs/ (e.g. mnist_mlp).")
    resources: Resources = Field(default_factory=Resources)
    strategy: Literal["ddp", "fsdp", "deepspeed", "pipeline", "auto"] = "ddp"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec)
    train: dict[str, Any] = Field(default_factory=dict, description="The workload's arguments.")
    data: dict[str, Any] = Field(default_factory=dict, description="Where the data comes from.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    storage_path: str = Field("runs", description="Run directories; shared storage on clusters.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    # Sections owned by later stages; each module validates its own section.
    sweep: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    compress: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    queue: QueueSpec = Field(default_factory=QueueSpec)

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("expected letters, digits, '.', '_' or '-' (it names a directory)")
        return v

    @model_validator(mode="after")
    def _fp16_needs_gpu(self) -> JobSpec:
        if self.precision == "fp16" and self.resources.gpus_per_worker <= 0:
            raise ValueError(
                "precision: fp16 needs a GPU (resources.gpus_per_worker > 0); "
                "use precision: bf16 on CPU"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        """Hash of the resolved spec, stable across key order. The queue section says how the
        job is scheduled, not what it computes: left out."""
        d = self.to_dict()
        d.pop("queue", None)
        if d.get("strategy") != "pipeline":  # its defaults change nothing of other strategies
            d.pop("pipeline", None)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Workloads


def import_workload(name: str):
    """The workload module of `workload: name` (orchestrator/workloads.py finds it)."""
    from orchestrator import workloads

    return workloads.import_workload(name)


def available_workloads() -> list[str]:
    from orchestrator import workloads

    return workloads.builtin()


# ---------------------------------------------------------------------------------------------
# Loading, overrides, validation


def _yaml_error(exc: yaml.YAMLError, source: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        return SpecError([FieldError("<yaml>", f"invalid YAML at {where}: {problem}")], source)
    return SpecError([FieldError("<yaml>", f"invalid YAML: {exc}")], source)


MAX_NESTING = 100
# libyaml's parser when PyYAML was built with it (the wheels are): same documents, same marks
# (line, column) in errors; 9x faster than the pure-Python one on the shipped spec and 32x on a
# 500-deep value (bench/plan_cost.py).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _deep_position(text: str, limit: int = MAX_NESTING) -> tuple[int, int]:
    """(line, column), 1-based, where flow brackets first nest deeper than `limit`."""
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        for col, ch in enumerate(line, 1):
            depth += ch in "[{"
            depth -= ch in "]}"
            if depth > limit:
                return lineno, col
    return 1, 1


def parse_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:
        line, col = _deep_position(text)
        raise SpecError(
            [
                FieldError(
                    "<yaml>",
                    f"nesting too deep at line {line}, column {col} "
                    f"(a spec needs only a few levels)",
                )
            ],
            source,
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            [FieldError("<root>", "expected a mapping of keys to values", _show(data))], source
        )
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError([FieldError("<file>", f"spec file not found: {p}")], str(p))
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([FieldError("<file>", f"cannot read {p}: {exc}")], str(p)) from None
    return parse_yaml(text, str(p))


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=3e-4` -> ("train.lr", 0.0003). Values are parsed as YAML scalars."""
    if "=" not in item:
        raise SpecError(
            [FieldError(item, "expected an override of the form dotted.key=value", item)]
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SpecError([FieldError(key or "<override>", "empty key in override", item)])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-4 as a string (no dot); numbers are what people mean here.
    if isinstance(value, str):
        try:
            value = float(value) if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value) else value
        except ValueError:
            pass
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(data, default=str))  # deep copy, plain types
    for item in overrides:
        key, value = parse_override(item)
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(
                    [
                        FieldError(
                            ".".join(parts[: i + 1]),
                            f"cannot set {key}: this key holds a value, not a section",
                            _show(child),
                        )
                    ]
                )
            node = child
        node[parts[-1]] = value
    return out


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model that holds `loc`'s last element, for did-you-mean."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        args = getattr(ann, "__args__", None)
        candidates = [ann, *(args or [])]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def pydantic_errors(
    exc: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        path = ".".join(str(p) for p in loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        kind = err.get("type", "")
        given = err.get("input")
        if kind == "extra_forbidden":
            known = _fields_at(model, loc)
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            msg = "unknown key"
            msg += (
                f"; did you mean '{guess[0]}'?"
                if guess
                else f"; expected one of {', '.join(known)}"
            )
            out.append(FieldError(path, msg))
        elif kind == "missing":
            out.append(FieldError(path, "required key is missing"))
        else:
            out.append(FieldError(path, _expected(err.get("msg", "invalid value")), _show(given)))
    return out


def _expected(msg: str) -> str:
    """Turn pydantic's "Input should be X" into "expected X"."""
    msg = msg.removeprefix("Value error, ")
    for head in ("Input should be ", "String should ", "List should ", "Dictionary should "):
        if msg.startswith(head):
            rest = msg[len(head) :]
            rest = rest.removeprefix("have ")
            if rest.startswith(("greater", "less")):
                rest = "a value " + rest
            return "expected " + rest
    return msg


def validate_spec(
    data: dict[str, Any],
    source: str | None = None,
    search: list[str] | None = None,
    check_extras: bool = True,
) -> JobSpec:
    """Validate a spec dict, the workload's `train:` arguments included. Raises SpecError.

    The workload is looked for in `search`, else the folder of `source` (the spec file), and
    the current folder (orchestrator/workloads.py). `check_extras`: also require the optional
    dependencies the spec needs to be installed here (orchestrator/extras.py); off where the
    spec runs elsewhere (orch submit: the cluster's `orch run` checks them there)."""
    if search is None and source:
        search = [str(Path(source).expanduser().resolve().parent)]
    errors: list[FieldError] = []
    spec: JobSpec | None = None
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc, JobSpec))

    workload = data.get("workload") if isinstance(data, dict) else None
    if isinstance(workload, str) and workload:
        errors.extend(_workload_errors(workload, data, search, check_extras))
    if spec is not None and spec.strategy == "pipeline":
        errors.extend(_pipeline_errors(spec, errors))

    if isinstance(data, dict):
        errors.extend(_section_errors(data))
        if check_extras:  # what the spec's fields need (the workload's own: above)
            from orchestrator import extras

            errors.extend(extras.spec_errors(data))

    if errors:
        raise SpecError(errors, source)
    assert spec is not None
    # Store the workload's resolved arguments (defaults filled in) so the run dir shows them.
    mod = import_workload(spec.workload)
    if not check_extras and _missing_extras(spec.workload, mod):
        return spec  # its Args may need them; where it runs, its own validation fills them in
    args_cls = getattr(mod, "Args", None)
    if args_cls is not None:
        spec.train = args_cls.model_validate(spec.train).model_dump(mode="json")
    data_cls = getattr(mod, "DataArgs", None)
    if data_cls is not None:
        spec.data = data_cls.model_validate(spec.data).model_dump(mode="json")
    resolve_train = getattr(mod, "resolve_train", None)  # e.g. a script path made absolute
    if callable(resolve_train):
        from orchestrator import workloads

        spec.train = resolve_train(spec.train, workloads._dirs(search))
    return spec


def _pipeline_errors(spec: JobSpec, errors: list[FieldError]) -> list[FieldError]:
    """`strategy: pipeline` against the resources, the precision and the workload's model."""
    pp, workers = spec.pipeline, spec.resources.workers
    out: list[FieldError] = []
    if pp.stages > workers:
        out.append(
            FieldError(
                "pipeline.stages",
                f"expected at most resources.workers={workers} stages (one worker per stage)",
                str(pp.stages),
            )
        )
    elif workers % pp.stages:
        out.append(
            FieldError(
                "resources.workers",
                f"expected a multiple of pipeline.stages={pp.stages} (stages x data-parallel "
                f"replicas), e.g. {pp.stages * max(1, workers // pp.stages)}",
                str(workers),
            )
        )
    if pp.microbatches < pp.stages:
        out.append(
            FieldError(
                "pipeline.microbatches",
                f"expected at least pipeline.stages={pp.stages} microbatches (fewer leave "
                "stages idle: the bubble is (S-1)/(M+S-1))",
                str(pp.microbatches),
            )
        )
    if spec.precision != "fp32":
        out.append(FieldError("precision", "strategy pipeline trains in fp32 here", spec.precision))
    batch = spec.train.get("batch_size")
    if isinstance(batch, int) and batch < pp.microbatches:
        out.append(
            FieldError(
                "train.batch_size",
                f"expected at least pipeline.microbatches={pp.microbatches} examples per step",
                str(batch),
            )
        )
    accum = spec.train.get("grad_accum", 1)
    if isinstance(accum, int) and accum != 1:
        out.append(
            FieldError(
                "train.grad_accum",
                "expected 1 under strategy pipeline (its microbatches accumulate gradients)",
                str(accum),
            )
        )
    if any(e.path == "workload" or e.path.startswith("train.") for e in errors):
        return out  # the model cannot be built from these arguments
    from orchestrator.worker import pipeline

    out.extend(
        pipeline.spec_errors(
            import_workload(spec.workload), spec.train, spec.pipeline.model_dump(mode="json")
        )
    )
    return out


# Optional sections are validated by the module that owns them: "section": "module:Model".
SECTION_MODELS: dict[str, str] = {
    "sweep": "orchestrator.sweep.spec:SweepSpec",
    "schedule": "orchestrator.sweep.schedule:ScheduleSpec",
    "compress": "orchestrator.compress.spec:CompressSpec",
    "tracking": "orchestrator.tracking:TrackingSpec",
}


def section_model(section: str) -> type[BaseModel]:
    """The model of an optional section, imported from the module that owns it."""
    module, _, attr = SECTION_MODELS[section].partition(":")
    return getattr(importlib.import_module(module), attr)


def _section_errors(data: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    for section in SECTION_MODELS:
        value = data.get(section)
        if value is None or not isinstance(value, dict):
            continue
        model = section_model(section)
        try:
            model.model_validate(value)
        except ValidationError as exc:
            errors.extend(pydantic_errors(exc, model, prefix=section))
    return errors


def _missing_extras(workload: str, mod) -> list[FieldError]:
    """The extras (pip install 'orchestrator[...]') the workload declares and that are missing."""
    from orchestrator import extras

    return extras.workload_errors(workload, mod)


def _workload_errors(
    workload: str,
    data: dict[str, Any],
    search: list[str] | None = None,
    check_extras: bool = True,
) -> list[FieldError]:
    from orchestrator import workloads

    try:
        found = workloads.resolve(workload, search)
    except workloads.WorkloadNotFound as exc:
        known = available_workloads()
        guess = difflib.get_close_matches(workload, known, n=1, cutoff=0.5)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        reason = exc.reason or (
            f"no such workload: not a built-in one ({', '.join(known)}){hint}, and not found "
            f"at {'; '.join(exc.tried)}"
        )
        return [FieldError("workload", reason, _show(workload))]
    mod = workloads.import_workload(workload)
    if not callable(getattr(mod, "train_loop", None)):
        return [
            FieldError(
                "workload",
                f"{found.origin} has no train_loop(config); a workload "
                "module defines train_loop (see docs/your_workload.md, or `orch new "
                "NAME` for a skeleton)",
                _show(workload),
            )
        ]
    missing = _missing_extras(workload, mod)
    if missing:  # its train:/data: models may need them (cartpole_dqn checks its env)
        return missing if check_extras else []
    errors: list[FieldError] = []
    for section, attr in (("train", "Args"), ("data", "DataArgs")):
        cls = getattr(mod, attr, None)
        value = data.get(section, {})
        if cls is None or not isinstance(value, dict):
            continue
        try:
            cls.model_validate(value)
        except ValidationError as exc:
            errors.extend(pydantic_errors(exc, cls, prefix=section))
    check = getattr(mod, "check_spec", None)  # a workload's own checks of files it needs
    if callable(check) and not errors:
        errors.extend(check(data, workloads._dirs(search)))
    return errors


def _too_deep(source: str | None) -> SpecError:
    return SpecError(
        [FieldError("<root>", f"values nested deeper than {MAX_NESTING} levels")], source
    )


def load_spec(
    path: str | Path, overrides: list[str] | None = None, check_extras: bool = True
) -> JobSpec:
    """Read, override and validate a spec file. Raises SpecError listing every problem."""
    data = read_yaml(path)
    try:
        data = apply_overrides(data, overrides or [])
        return validate_spec(data, source=str(path), check_extras=check_extras)
    except RecursionError:
        raise _too_deep(str(path)) from None


def load_spec_text(text: str, overrides: list[str] | None = None) -> JobSpec:
    try:
        data = apply_overrides(parse_yaml(text), overrides or [])
        return validate_spec(data)
    except RecursionError:
        raise _too_deep(None) from None


def json_schema() -> dict[str, Any]:
    return JobSpec.model_json_schema()


def dump_yaml(spec: JobSpec | dict[str, Any]) -> str:
    """A spec (or a resolved spec's dict) as the YAML of spec.resolved.yaml."""
    return yaml.safe_dump(spec.to_dict() if isinstance(spec, JobSpec) else spec, sort_keys=False)
