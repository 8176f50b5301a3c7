"""The DeepSpeed config a run uses, built from the spec and merged with the user's own JSON.

    orch plan jobs/mnist_mlp.yaml strategy=deepspeed deepspeed.stage=3    # prints the config
    orch plan jobs/mnist_mlp.yaml strategy=deepspeed deepspeed.config_file=ds.json

The spec owns the keys it has a field for; `deepspeed.config_file` may set anything else
(bucket sizes, overlap_comm, communication_data_type, ...). A key that both set to different
values is a SpecError naming both places. The map:

    spec                               DeepSpeed config
    deepspeed.stage (default 2)        zero_optimization.stage
    deepspeed.offload_optimizer        zero_optimization.offload_optimizer.device
    deepspeed.offload_param            zero_optimization.offload_param.device (stage 3 only)
    precision bf16 | fp16 | fp32       bf16.enabled / fp16.enabled
    train.grad_accum                   gradient_accumulation_steps
    train.grad_clip                    gradient_clipping (0 = off)
    train.batch_size                   train_micro_batch_size_per_gpu
    (micro batch x accum x workers)    train_batch_size

`optimizer` and `scheduler` sections are refused in the file: the optimizer and LR schedule
come from `train:` (the same for every strategy), and a torch optimizer is handed to
DeepSpeed, which also spares compiling FusedAdam.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.errors import FieldError, SpecError

DEFAULT_STAGE = 2
# Keys whose values come from `train:` instead; the file may not set them.
REFUSED_SECTIONS = {
    "optimizer": "the optimizer comes from train.optimizer / train.lr / train.weight_decay",
    "scheduler": "the LR schedule comes from train.lr_schedule / train.warmup_steps",
}


def from_parts(
    stage: int = DEFAULT_STAGE,
    offload_optimizer: str = "none",
    offload_param: str = "none",
    precision: str = "fp32",
    grad_accum: int = 1,
    grad_clip: float | None = None,
    micro_batch: int = 1,
    workers: int = 1,
) -> dict[str, Any]:
    """The DeepSpeed config for these choices alone (no user file)."""
    zero: dict[str, Any] = {"stage": int(stage)}
    if offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": offload_optimizer}
    if offload_param != "none":
        zero["offload_param"] = {"device": offload_param}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(micro_batch),
        "gradient_accumulation_steps": int(grad_accum),
        "train_batch_size": int(micro_batch) * int(grad_accum) * int(workers),
        "gradient_clipping": float(grad_clip or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,  # the Session logs; keep DeepSpeed's own prints out
        "wall_clock_breakdown": False,
    }
    if precision == "fp16":
        cfg["fp16"].update({"loss_scale": 0, "initial_scale_power": 16})  # dynamic loss scaling
    if offload_optimizer != "none" or offload_param != "none":
        # We hand DeepSpeed a torch optimizer; allow it under offload (else DeepSpeed insists
        # on its own CPU Adam, which needs a compiled op).
        cfg["zero_force_ds_cpu_optimizer"] = False
    return cfg


def read_config_file(path: str) -> dict[str, Any]:
    p = Path(path).expanduser()
    field = "deepspeed.config_file"
    if not p.is_file():
        raise SpecError([FieldError(field, "DeepSpeed config file not found", str(p))])
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([FieldError(field, f"cannot read {p}: {exc}")]) from None
    except json.JSONDecodeError as exc:
        raise SpecError(
            [
                FieldError(
                    field,
                    f"{p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                )
            ]
        ) from None
    if not isinstance(data, dict):
        raise SpecError([FieldError(field, f"{p} must hold a JSON object", type(data).__name__)])
    return data


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return a == b


def build(spec) -> dict[str, Any]:
    """The resolved DeepSpeed config for a JobSpec whose strategy is deepspeed. Raises SpecError."""
    ds = spec.deepspeed
    train = spec.train or {}
    path = ds.config_file
    user = read_config_file(path) if path else {}
    where = f"deepspeed.config_file ({path})"
    errors: list[FieldError] = []

    def choose(spec_field: str, spec_value: Any, key: str, default: Any) -> Any:
        """The spec's value when set; else the file's; else the default. Both set and
        different: an error naming both places."""
        file_value = _get(user, key)
        if spec_value is not None and file_value is not None and not _same(spec_value, file_value):
            errors.append(
                FieldError(
                    spec_field,
                    f"conflicts with {where}, which sets {key}: {json.dumps(file_value)}; "
                    f"set it in one place only, or make them agree",
                    repr(spec_value),
                )
            )
            return spec_value
        if spec_value is not None:
            return spec_value
        return file_value if file_value is not None else default

    for section, why in REFUSED_SECTIONS.items():
        if section in user:
            errors.append(FieldError(where, f"remove the '{section}' section: {why}"))

    stage = choose("deepspeed.stage", ds.stage, "zero_optimization.stage", DEFAULT_STAGE)
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
        errors.append(
            FieldError(f"{where}: zero_optimization.stage", "expected 0, 1, 2 or 3", repr(stage))
        )
        stage = DEFAULT_STAGE
    off_opt = choose(
        "deepspeed.offload_optimizer",
        ds.offload_optimizer,
        "zero_optimization.offload_optimizer.device",
        "none",
    )
    off_par = choose(
        "deepspeed.offload_param",
        ds.offload_param,
        "zero_optimization.offload_param.device",
        "none",
    )
    for key, value in (("offload_optimizer", off_opt), ("offload_param", off_par)):
        if value not in ("none", "cpu", "nvme"):
            errors.append(
                FieldError(
                    f"{where}: zero_optimization.{key}.device",
                    "expected none, cpu or nvme",
                    repr(value),
                )
            )
    if off_par not in ("none", None) and stage != 3:
        errors.append(
            FieldError(
                "deepspeed.offload_param",
                f"offload_param: {off_par} needs ZeRO stage 3 (resolved stage: {stage})",
            )
        )
    if off_opt not in ("none", None) and stage == 0:
        errors.append(
            FieldError(
                "deepspeed.offload_optimizer",
                "offload_optimizer needs ZeRO stage 1, 2 or 3 (resolved stage: 0)",
            )
        )

    # Precision: the spec always says one (default fp32); the file's sections must agree.
    precision = spec.precision
    for fmt in ("bf16", "fp16"):
        enabled = _get(user, f"{fmt}.enabled")
        if enabled is None and fmt == "bf16":
            enabled = _get(user, "bfloat16.enabled")
        if enabled is not None and bool(enabled) != (precision == fmt):
            errors.append(
                FieldError(
                    "precision",
                    f"conflicts with {where}, which sets {fmt}.enabled: {json.dumps(enabled)}; "
                    f"precision: {precision} decides it "
                    f"(set precision: {fmt if enabled else 'fp32'}, "
                    f"or drop {fmt}.enabled from the file)",
                    precision,
                )
            )

    accum = choose("train.grad_accum", train.get("grad_accum"), "gradient_accumulation_steps", 1)
    clip = train.get("grad_clip") or 0.0
    file_clip = _get(user, "gradient_clipping")
    if file_clip is not None and not _same(float(file_clip), float(clip)):
        errors.append(
            FieldError(
                "train.grad_clip",
                f"conflicts with {where}, which sets gradient_clipping: {json.dumps(file_clip)}; "
                "set it in one place only, or make them agree",
                repr(train.get("grad_clip")),
            )
        )
    micro = choose("train.batch_size", train.get("batch_size"), "train_micro_batch_size_per_gpu", 1)
    workers = spec.resources.workers
    total = int(micro) * int(accum) * workers
    file_total = _get(user, "train_batch_size")
    if file_total is not None and not _same(file_total, total):
        errors.append(
            FieldError(
                where,
                f"train_batch_size: {file_total} there, but train.batch_size x train.grad_accum x "
                f"resources.workers = {micro} x {accum} x {workers} = {total}; "
                "drop it from the file",
            )
        )
    if errors:
        raise SpecError(errors)

    cfg = from_parts(
        stage, off_opt, off_par, precision, int(accum), float(clip), int(micro), workers
    )
    # The file's other keys pass through (bucket sizes, overlap_comm, ...); ours win on the
    # keys checked above, which agree anyway.
    merged = _merge(user, cfg)
    if _get(user, "bfloat16") is not None:
        merged.pop("bfloat16", None)  # old spelling, superseded by bf16 above
    for key in ("steps_per_print", "wall_clock_breakdown"):
        if key in user:
            merged[key] = user[key]
    for key in ("offload_optimizer", "offload_param"):
        dev = _get(merged, f"zero_optimization.{key}.device")
        if dev == "none":
            merged["zero_optimization"].pop(key, None)
        elif isinstance(_get(user, f"zero_optimization.{key}"), dict):
            _set(
                merged,
                f"zero_optimization.{key}",
                {**user["zero_optimization"][key], "device": dev},
            )
    return merged
