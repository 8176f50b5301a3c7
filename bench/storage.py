"""Run state on object storage against a local disk, side by side in one run.

    .venv/bin/python bench/storage.py                    # 3 rounds; ~100 MB checkpoint
    .venv/bin/python bench/storage.py --rounds 5 --mb 200 --skip-train

Two comparisons, each alternating local and S3 round by round so machine noise hits both:

1. Checkpoint I/O through orchestrator/rundir.py (what orch's own checkpoint code, the RLlib
   workload and `orch translate/rollout/compress` use): a ~100 MB checkpoint folder (model.pt
   of a state dict, optimizer.pt, state.json, _COMPLETE) saved into a run directory, then
   restored (downloaded) into a fresh local folder, on a local disk and on moto's S3 server
   on 127.0.0.1 (started and stopped here, cluster/local_cluster.py).
2. Training step time of `orch run jobs/mnist_mlp.yaml` (2 workers, embedded local Ray) with
   its run directory on the local disk and in the bucket: the median of the logged
   `step_time_s` after the first epoch. On a bucket rank 0 writes its metrics in chunks off
   the training loop (rundir.MetricsWriter) and checkpoints go through Ray Train's upload.

Ratios are S3 / local on the medians. moto is an in-process Python server on the same two
cores as the training, so the S3 numbers here are a worst case, not a cloud's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "cluster"))


def make_checkpoint(folder: Path, mb: int) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    n = mb * 2**20 // 4 // 3  # float32 elements: model.pt one third, optimizer.pt two
    torch.save({"w": torch.randn(n)}, folder / "model.pt")
    torch.save({"exp_avg": torch.randn(n), "exp_avg_sq": torch.randn(n)}, folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps({"step": 1}))
    (folder / "_COMPLETE").write_text(
        json.dumps({"files": ["model.pt", "optimizer.pt", "state.json"]})
    )
    return folder


def checkpoint_io(src: Path, run_dir: str) -> tuple[float, float]:
    """(save s, restore s) of one checkpoint through rundir."""
    from orchestrator import rundir

    dest = rundir.join(run_dir, "checkpoint_000001")
    rundir.delete(dest)
    t0 = time.perf_counter()
    rundir.upload_dir(src, dest)
    saved = time.perf_counter() - t0
    assert rundir.is_complete(dest)
    out = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    t0 = time.perf_counter()
    rundir.download_dir(dest, out)
    restored = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return saved, restored


def train_step_time(storage: str, name: str, epochs: int, every: int) -> float | None:
    from rich.console import Console

    from orchestrator import rundir
    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.spec import load_spec

    spec = load_spec(
        ROOT / "jobs/mnist_mlp.yaml",
        [
            f"storage_path={storage}",
            f"name={name}",
            f"train.epochs={epochs}",
            "train.log_every=8",
            f"checkpoint.every_steps={every}",
        ],
    )
    summary = launch(plan(spec), console=Console(quiet=True))
    assert summary["status"] == "SUCCEEDED", summary["error"]
    rows = [
        r
        for r in rundir.read_metrics(summary["run_dir"])
        if r.get("step_time_s") and r.get("epoch", 0) >= 1
    ]
    return statistics.median(r["step_time_s"] for r in rows) if rows else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=100, help="checkpoint size (default 100 MB)")
    ap.add_argument("--epochs", type=int, default=4, help="MNIST epochs per training run")
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        help="steps between checkpoints (the shipped spec's 100)",
    )
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args(argv)

    from local_cluster import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    s3 = LocalCluster(work / "state").up(ray=False, bucket="bench")
    try:
        os.environ.update(s3.s3_env())
        src = make_checkpoint(work / "ckpt", a.mb)
        size = sum(f.stat().st_size for f in src.iterdir()) / 2**20
        io: dict[str, list[tuple[float, float]]] = {"local": [], "s3": []}
        for r in range(a.rounds):
            for kind in ("local", "s3") if r % 2 == 0 else ("s3", "local"):
                where = str(work / "runs" / "io") if kind == "local" else "s3://bench/runs/io"
                io[kind].append(checkpoint_io(src, where))
        med = {
            k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
            for k, v in io.items()
        }
        print(f"checkpoint of {size:.0f} MB through orchestrator.rundir, median of {a.rounds}:")
        print("| | local disk | S3 (moto, 127.0.0.1) | S3 / local |")
        print("|---|---|---|---|")
        for i, what in enumerate(("save", "restore")):
            print(
                f"| {what} | {med['local'][i]:.2f} s | {med['s3'][i]:.2f} s | "
                f"{med['s3'][i] / med['local'][i]:.2f}x |"
            )
        if a.skip_train:
            return
        from orchestrator import runtime

        runtime.connect(num_cpus=4)
        steps: dict[str, list[float]] = {"local": [], "s3": []}
        train_step_time(
            str(work / "runs"), "warmup", 1, a.checkpoint_every
        )  # imports, first workers: untimed
        for r in range(a.rounds):
            for kind in ("local", "s3") if r % 2 == 0 else ("s3", "local"):
                storage = str(work / "runs") if kind == "local" else "s3://bench/runs"
                steps[kind].append(
                    train_step_time(storage, f"{kind}{r}", a.epochs, a.checkpoint_every)
                )
        sl, ss = statistics.median(steps["local"]), statistics.median(steps["s3"])
        print(
            f"\nMNIST MLP, 2 workers, {a.epochs} epochs, a checkpoint every "
            f"{a.checkpoint_every} steps; median step time after epoch 1, median of "
            f"{a.rounds} runs each:"
        )
        print("| run dir | ms/step | per run |")
        print("|---|---|---|")
        for kind, med_s in (("local disk", sl), ("s3://", ss)):
            runs = ", ".join(f"{x * 1e3:.2f}" for x in steps["local" if kind[0] == "l" else "s3"])
            print(f"| {kind} | {med_s * 1e3:.2f} | {runs} |")
        print(f"s3 / local: {ss / sl:.3f}x")
    finally:
        s3.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
