"""Overhead of `orch run` (Ray Train) against the same MNIST loop without Ray.

    python bench/overhead.py                 # 3 rounds, 6 epochs each
    python bench/overhead.py --rounds 1 --epochs 3

Compares, in one run and interleaved round by round so machine noise hits all alike:
  * 1 worker:  `orch run ... resources.workers=1`  vs  `python jobs/mnist_mlp.py`
  * 2 workers: `orch run ... resources.workers=2`  vs
    `torchrun --nproc_per_node 2 jobs/mnist_mlp.py`
Steady-state step time is the median of the logged `step_time_s` after the first epoch (each
logged value averages the steps since the previous log). Start-up (process start to first
logged step) is reported apart. Every side runs with one intra-op thread per worker
(OMP_NUM_THREADS=1), as Ray does for a worker with cpus_per_worker=1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _rows_from_stdout(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"step"' in line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def _steady(rows: list[dict], steps_per_epoch: int) -> float:
    vals = [r["step_time_s"] for r in rows if "step_time_s" in r and r["step"] > steps_per_epoch]
    return statistics.median(vals) if vals else float("nan")


def run_plain(epochs: int, workers: int) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [str(ROOT / "jobs/mnist_mlp.py"), "--epochs", str(epochs), "--log-every", "10"]
    if workers == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(workers), *args]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    rows = _rows_from_stdout(out.stdout)
    first = min(r["time"] for r in rows if "time" in r)
    spe = 4000 // (64 * workers) + (1 if 4000 % (64 * workers) else 0)
    return _steady(rows, spe), first - t0


def run_orch(epochs: int, workers: int, storage: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(BIN / "orch"),
        "run",
        str(ROOT / "jobs/mnist_mlp.yaml"),
        f"train.epochs={epochs}",
        f"resources.workers={workers}",
        "train.log_every=10",
        "checkpoint.every_steps=100000",
        f"storage_path={storage}",
        "--fresh",
    ]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
    run_dirs = sorted(Path(storage).glob("mnist-mlp__*"), key=lambda p: p.stat().st_mtime)
    rows = [json.loads(x) for x in (run_dirs[-1] / "metrics.jsonl").read_text().splitlines()]
    first = min(r["time"] for r in rows)
    spe = 4000 // (64 * workers) + (1 if 4000 % (64 * workers) else 0)
    return _steady(rows, spe), first - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    a = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("plain1", "orch1", "torchrun2", "orch2")
    }
    with tempfile.TemporaryDirectory() as storage:
        for r in range(a.rounds):
            results["plain1"].append(run_plain(a.epochs, 1))
            results["orch1"].append(run_orch(a.epochs, 1, storage))
            results["torchrun2"].append(run_plain(a.epochs, 2))
            results["orch2"].append(run_orch(a.epochs, 2, storage))
            print(
                f"round {r + 1}/{a.rounds}: "
                + ", ".join(f"{k} {v[-1][0] * 1000:.2f} ms/step" for k, v in results.items()),
                flush=True,
            )
    med = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
    start = {k: statistics.median(x[1] for x in v) for k, v in results.items()}
    ratio1 = [o[0] / p[0] for o, p in zip(results["orch1"], results["plain1"], strict=False)]
    ratio2 = [o[0] / p[0] for o, p in zip(results["orch2"], results["torchrun2"], strict=False)]
    print()
    print(
        "| comparison | baseline ms/step | orch ms/step | ratio (median of rounds) "
        "| start-up baseline s | start-up orch s |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| 1 worker: orch run vs python jobs/mnist_mlp.py | {med['plain1'] * 1000:.2f} "
        f"| {med['orch1'] * 1000:.2f} "
        f"| {statistics.median(ratio1):.3f}x | {start['plain1']:.1f} | {start['orch1']:.1f} |"
    )
    print(
        f"| 2 workers: orch run vs torchrun --nproc_per_node 2 | {med['torchrun2'] * 1000:.2f} "
        f"| {med['orch2'] * 1000:.2f} "
        f"| {statistics.median(ratio2):.3f}x | {start['torchrun2']:.1f} | {start['orch2']:.1f} |"
    )
    print(
        f"\nper-round ratios: 1 worker {[round(x, 3) for x in ratio1]}, "
        f"2 workers {[round(x, 3) for x in ratio2]}"
    )


if __name__ == "__main__":
    main()
