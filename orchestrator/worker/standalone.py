"""A workload run alone, without Ray: `--key value` flags taken from its Args and DataArgs.

python jobs/mnist_mlp.py --epochs 3 --lr 3e-4 --max-steps 50
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import BaseModel, ValidationError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_args(
    args_cls: type[BaseModel], data_cls: type[BaseModel] | None, argv: list[str] | None, doc: str
) -> tuple[dict[str, Any], dict[str, Any], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    groups = [("train", args_cls)] + ([("data", data_cls)] if data_cls else [])
    for section, cls in groups:
        g = parser.add_argument_group(f"{section}: arguments")
        for name, f in cls.model_fields.items():
            default = f.default if f.default is not None else None
            g.add_argument(
                _flag(name),
                dest=f"{section}__{name}",
                default=None,
                metavar="V",
                help=f"{f.description or ''} (default: {json.dumps(default, default=str)})",
            )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="fp16 needs --gpu (a loss scaler on CUDA)",
    )
    parser.add_argument("--gpu", action="store_true", help="train on cuda:0 (no Ray needed)")
    parser.add_argument(
        "--strategy",
        default="ddp",
        choices=["ddp", "deepspeed"],
        help="ddp (plain module in one process) or a one-process DeepSpeed engine",
    )
    parser.add_argument("--run-dir", default=None, help="write checkpoints here")
    parser.add_argument("--resume-from", default=None, help="a checkpoint directory")
    ns = parser.parse_args(argv)
    import yaml

    values: dict[str, dict[str, Any]] = {"train": {}, "data": {}}
    for key, raw in vars(ns).items():
        if "__" in key and raw is not None:
            section, name = key.split("__", 1)
            values[section][name] = yaml.safe_load(raw)
    try:
        train = args_cls.model_validate(values["train"]).model_dump(mode="json")
        data = data_cls.model_validate(values["data"]).model_dump(mode="json") if data_cls else {}
    except ValidationError as exc:
        parser.error(str(exc))
    if ns.precision == "fp16" and not ns.gpu:
        parser.error("--precision fp16 needs --gpu: fp16 with a loss scaler runs on CUDA only")
    if ns.gpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("--gpu given but torch sees no CUDA device")
    return train, data, ns


def run_alone(module, argv: list[str] | None = None) -> Any:
    """Parse `argv` against the workload's Args/DataArgs and run its train_loop in this
    process; returns what the loop returns."""
    from orchestrator.worker.config import WorkerConfig

    data_cls = getattr(module, "DataArgs", None)
    train, data, ns = parse_args(module.Args, data_cls, argv, module.__doc__ or "")
    config = WorkerConfig(
        train=train,
        data=data,
        strategy=ns.strategy,
        precision=ns.precision,
        use_gpu=bool(ns.gpu),
        seed=ns.seed,
        checkpoint={"every_steps": 10**9 if ns.run_dir is None else 100, "keep": 2},
        run_dir=ns.run_dir,
        resume_from=ns.resume_from,
    )
    return module.train_loop(config.to_dict())
