"""`orch new NAME`: a workload of your own to start from, runnable at once.

    orch new mytask                 # mytask.py, mytask.yaml, test_mytask.py in this folder
    python mytask.py --epochs 2     # alone, no Ray
    orch run mytask.yaml            # on Ray, 2 workers; rerun to resume
    pytest test_mytask.py

The workload trains a small MLP on scikit-learn's 8x8 digits (they ship inside the package:
no download), through the same worker session as the built-in jobs: typed Args with a
description per field, build_model, load_data, train_loop. Replace the model and the data with
yours; keep the shape of the loop.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path

from orchestrator.errors import ExitCode, OrchestratorError


class ScaffoldError(OrchestratorError):
    """`orch new` cannot write the skeleton (a bad name, files in the way)."""

    exit_code = ExitCode.BAD_INPUT


WORKLOAD = '''"""{name}: a training workload made by `orch new {name}`. Replace model and data.

    python {name}.py --epochs 2 --lr 1e-3         # alone, no Ray (every Args field is a flag)
    orch run {name}.yaml                          # on Ray: 2 DDP workers; rerun resumes
    orch run {name}.yaml train.hidden=128 resources.workers=1
    pytest test_{name}.py

The contract (docs/your_workload.md): `Args` (the spec's `train:`), `DataArgs` (`data:`),
`build_model(args)`, `train_loop(config)` running in every worker on `orchestrator.worker`'s
session, and SHAPE_KEYS (the `train:` keys that change the model's shape; a resume with other
values is refused).
"""

from __future__ import annotations

import sys
from typing import Literal

from orchestrator import worker
from pydantic import BaseModel, ConfigDict, Field

SHAPE_KEYS = ("hidden",)


class Args(worker.OptimArgs):
    """`train:` in {name}.yaml. OptimArgs adds optimizer, lr schedule, warm-up, accumulation,
    clipping and log_every."""

    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training data.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Examples per worker per step.")
    hidden: int = Field(64, ge=1, le=65_536, description="Width of the hidden layer.")
    lr: float = Field(3e-3, gt=0, le=10, description="Peak learning rate.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field("adam", description="Optimizer.")


class DataArgs(BaseModel):
    """`data:` in {name}.yaml."""

    model_config = ConfigDict(extra="forbid")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Held-out share of the data.")


def build_model(args: Args):
    import torch.nn as nn

    return nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))


def load_data(data: DataArgs):
    """(x_train, y_train, x_test, y_test): scikit-learn's 8x8 digits, a fixed split."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(x))
    n_test = int(round(len(x) * data.test_fraction))
    x = (x / 16.0).astype(np.float32)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64)


def evaluate(model, x, y, sess) -> float:
    """Accuracy, each worker taking a slice, summed across workers."""
    import torch

    model.eval()
    xs = torch.from_numpy(x[sess.rank :: sess.world_size]).to(sess.device)
    ys = torch.from_numpy(y[sess.rank :: sess.world_size])
    with torch.no_grad(), sess.autocast():
        pred = model(xs).argmax(dim=1).cpu()
    correct, total = sess.all_reduce_sum([float((pred == ys).sum()), float(len(ys))])
    model.train()
    return correct / max(total, 1.0)


def train_loop(config: dict) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    args = Args.model_validate(config.get("train", {{}}))
    data = DataArgs.model_validate(config.get("data", {{}}))
    sess = worker.setup(config)

    xtr, ytr, xte, yte = load_data(data)
    train_ds = TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr))
    sampler = worker.distributed_sampler(train_ds, sess, shuffle=True)
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch

    model, _opt, _sched = sess.prepare(build_model(args), args, total_steps // args.grad_accum)
    sess.set_progress(total_steps, metrics=("loss", "accuracy"))  # orch run: step/total, ETA
    state = sess.restore() or {{}}  # a rerun (or a restarted worker) continues from here
    step = int(state.get("step", 0))
    acc = state.get("accuracy")  # None until the first evaluation: left out of the rows
    loss_value = float("nan")
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)  # the same order on resume: skip what this epoch saw
        for i, (x, y) in enumerate(loader):
            if i < skip:
                continue
            with sess.autocast():
                loss = F.cross_entropy(model(x.to(sess.device)), y.to(sess.device))
            sess.backward(loss)
            step += 1
            loss_value = loss.item()
            if step % steps_per_epoch == 0:
                acc = evaluate(model, xte, yte, sess)
            if step == total_steps:
                break
            if sess.should_checkpoint(step):
                sess.save_checkpoint(
                    step, {{"loss": loss_value, "accuracy": acc}}, state={{"accuracy": acc}}
                )
            elif step % args.log_every == 0:
                sess.log(
                    {{
                        "loss": loss_value,
                        "accuracy": acc,
                        "epoch": epoch,
                        **sess.throughput(step, args.batch_size),
                    }},
                    step,
                )
    final = {{"loss": loss_value, "accuracy": acc}}
    sess.finish(final, step, state={{"accuracy": acc}})
    return final


def main(argv: list[str] | None = None) -> None:
    from orchestrator.worker.standalone import run_alone

    result = run_alone(sys.modules[__name__], argv)
    print(f"test accuracy: {{result['accuracy']:.4f}}")


if __name__ == "__main__":
    main()
'''

SPEC = """# {name}: made by `orch new {name}`.
#   orch run {name}.yaml                        # train on local Ray; the same command resumes
#   orch run {name}.yaml train.lr=1.0e-3        # dotted overrides
#   orch plan {name}.yaml                       # what would run, without running it
name: {name}
workload: {name}             # {name}.py beside this file
resources: {{workers: 2, cpus_per_worker: 1}}
strategy: ddp
precision: fp32
train: {{epochs: 10, batch_size: 64, hidden: 64, lr: 3.0e-3, log_every: 5}}
checkpoint: {{every_steps: 50, keep: 2}}
failure: {{max_failures: 1}}
storage_path: runs
"""

TEST = '''"""Tests of {name}.py, made by `orch new {name}`:  pytest test_{name}.py"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_the_spec_is_valid():
    from orchestrator.spec import load_spec

    spec = load_spec(HERE / "{name}.yaml")
    assert spec.workload == "{name}" and spec.train["hidden"] == 64


def test_the_loss_falls_alone(tmp_path):
    """The loop without Ray (one process, as `python {name}.py` runs it)."""
    from orchestrator.rundir import read_metrics
    from orchestrator.worker.config import WorkerConfig

    import {name} as job

    config = WorkerConfig(
        workload="{name}",
        run_dir=str(tmp_path),
        train={{"epochs": 3, "log_every": 5}},
        checkpoint={{"every_steps": 10**6}},
    )
    final = job.train_loop(config.to_dict())
    losses = [r["loss"] for r in read_metrics(tmp_path) if "loss" in r]
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert final["accuracy"] > 0.5
'''


def write_skeleton(name: str, folder: str | Path = ".", force: bool = False) -> list[Path]:
    """Write NAME.py, NAME.yaml and test_NAME.py into `folder`; the paths written."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"NAME {name!r}: expected a Python module name (letters, digits and "
            "'_', not starting with a digit), e.g. my_task"
        )
    from orchestrator import workloads

    if name in workloads.builtin() or importlib.util.find_spec(name) is not None:
        raise ScaffoldError(
            f"NAME {name!r}: a module of that name exists already (a built-in "
            "workload, a package or the standard library); choose another name"
        )
    out = Path(folder)
    files = {
        out / f"{name}.py": WORKLOAD,
        out / f"{name}.yaml": SPEC,
        out / f"test_{name}.py": TEST,
    }
    taken = [str(p) for p in files if p.exists()]
    if taken and not force:
        raise ScaffoldError(
            f"{', '.join(taken)} exist(s) already; use --force to overwrite, or another NAME"
        )
    out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text.format(name=name))
    return list(files)
