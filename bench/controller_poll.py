"""Ray Train's controller poll interval: Ray's default 2 s against orch's 0.25 s, side by side.

    .venv/bin/python bench/controller_poll.py                 # 2 repeats, 8 and 1 checkpoints
    .venv/bin/python bench/controller_poll.py --repeats 3 --workers 1

Each launch is the MNIST MLP for one epoch (32 steps of 2 x 64 images) through
orchestrator.launch.launch in one embedded local Ray, the two intervals alternating. A worker's
ray.train.report (each checkpoint) waits for the controller's next poll, and a finished run is
noticed at the next poll. Per launch: seconds from the first to the last metrics row ("train"),
from the last row to launch() returning ("tail"), and in all; the ratio is 2 s / 0.25 s.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_launch(interval: str, every_steps: int, workers: int) -> dict[str, float]:
    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.rundir import read_metrics
    from orchestrator.runtime import TRAIN_POLL_ENV
    from orchestrator.spec import load_spec

    os.environ[TRAIN_POLL_ENV] = interval  # read when fit() starts
    runs = tempfile.mkdtemp(prefix="bench-poll-")
    spec = load_spec(
        ROOT / "jobs/mnist_mlp.yaml",
        [
            f"storage_path={runs}",
            "name=poll",
            "train.epochs=1",
            "train.log_every=4",
            f"checkpoint.every_steps={every_steps}",
            f"resources.workers={workers}",
        ],
    )
    t0 = time.time()
    from rich.console import Console

    summary = launch(plan(spec), console=Console(quiet=True))
    end = time.time()
    assert summary["status"] == "SUCCEEDED", summary["error"]
    rows = read_metrics(summary["run_dir"])
    return {
        "train": rows[-1]["time"] - rows[0]["time"],
        "tail": end - rows[-1]["time"],
        "total": end - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from orchestrator import runtime

    runtime.connect(num_cpus=4)
    steps = math.ceil(4000 / (64 * args.workers))  # one epoch of the 4,000 training images
    every = max(1, steps // 8)
    cases = [(f"{steps // every} checkpoints", every), ("1 checkpoint (the last)", 10_000)]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.repeats):
        for name, every in cases:
            for interval in ("2.0", "0.25"):
                res = one_launch(interval, every, args.workers)
                results.setdefault((name, interval), []).append(res)
                print(
                    f"repeat {r}: {name}, interval {interval} s: "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in res.items()),
                    flush=True,
                )

    def med(name, interval, key):
        return statistics.median(x[key] for x in results[(name, interval)])

    print(f"\nMNIST MLP, 1 epoch, {args.workers} worker(s), medians of {args.repeats}:\n")
    print("| run | part | 2 s poll (Ray) | 0.25 s poll (orch) | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, _ in cases:
        for key in ("train", "tail", "total"):
            slow, fast = med(name, "2.0", key), med(name, "0.25", key)
            print(f"| {name} | {key} | {slow:.2f} s | {fast:.2f} s | {slow / fast:.2f}x |")


if __name__ == "__main__":
    main()
