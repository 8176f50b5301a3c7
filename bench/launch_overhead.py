"""Fixed cost of a Ray Train launch: Ray's TorchTrainer as it comes against orch's.

    .venv/bin/python bench/launch_overhead.py                  # 4 pairs, 2 workers
    .venv/bin/python bench/launch_overhead.py --pairs 6 --workers 1

Each launch is the MNIST MLP for one epoch through orchestrator.launch.launch in one embedded
local Ray (num_cpus=4), the two variants alternating, after one warm-up launch:

- "ray": ray.train.torch.TorchTrainer with Ray's TorchConfig and default callbacks: the
  controller imports torch to unpickle them, and each launch also starts a PlacementGroupCleaner
  and a DatasetManager (the MNIST job has no Ray Datasets);
- "orch": orchestrator.launch.ray_train.trainer as `orch run` uses it in an embedded Ray: no
  torch in the controller (orchestrator/launch/torch_backend.py), neither of those two actors.

Per launch: seconds from launch() to the first metrics row, and in all; the busy CPU seconds of
the whole machine meanwhile (/proc/stat), so run it on an otherwise idle machine.
Ratios are ray / orch on the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat: user, nice, system, irq,
    softirq), so that processes too short-lived to sample are counted too."""
    fields = open("/proc/stat").readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def one_launch(variant: str, workers: int) -> dict[str, float]:
    from orchestrator.launch import launch, ray_train
    from orchestrator.plan import plan
    from orchestrator.rundir import read_metrics
    from orchestrator.spec import load_spec

    runs = tempfile.mkdtemp(prefix="bench-launch-")
    spec = load_spec(
        ROOT / "jobs/mnist_mlp.yaml",
        [
            f"storage_path={runs}",
            f"name={variant}",
            "train.epochs=1",
            f"resources.workers={workers}",
            "checkpoint.every_steps=1000",
            "train.log_every=8",
        ],
    )
    real = ray_train.trainer

    def forced(p, train_fn, *, keep_cleaner, callbacks=None, config=None, **kw):
        if variant == "orch":
            return real(p, train_fn, keep_cleaner=False, callbacks=callbacks, config=config, **kw)
        from ray.train.torch import TorchConfig, TorchTrainer

        objs = ray_train.ray_objects(p, callbacks)
        return TorchTrainer(
            train_fn,
            torch_config=TorchConfig(backend=p.backend),
            train_loop_config=config,
            scaling_config=objs["ScalingConfig"],
            run_config=objs["RunConfig"],
        )

    ray_train.trainer = forced
    cpu0 = _machine_cpu_s()
    t0 = time.time()
    try:
        summary = launch(plan(spec))
    finally:
        ray_train.trainer = real
    wall = time.time() - t0
    cpu = _machine_cpu_s() - cpu0
    rows = read_metrics(summary["run_dir"])
    assert summary["status"] == "SUCCEEDED", summary["error"]
    return {"first_row_s": rows[0]["time"] - t0, "wall_s": wall, "cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from orchestrator import runtime

    runtime.connect(num_cpus=4)
    one_launch("orch", args.workers)  # warm-up: first imports, Ray's first actors
    results: dict[str, list[dict[str, float]]] = {"ray": [], "orch": []}
    for i in range(args.pairs):
        for variant in ("ray", "orch") if i % 2 == 0 else ("orch", "ray"):
            r = one_launch(variant, args.workers)
            results[variant].append(r)
            print(
                f"pair {i} {variant:4s} first row {r['first_row_s']:5.2f} s  "
                f"launch {r['wall_s']:5.2f} s  cpu {r['cpu_s']:5.1f} s",
                flush=True,
            )
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in ("first_row_s", "wall_s", "cpu_s")}
        for v, rs in results.items()
    }
    print("\n| variant | first row s | launch s | CPU s |\n|---|---:|---:|---:|")
    for v in ("ray", "orch"):
        m = med[v]
        print(f"| {v} | {m['first_row_s']:.2f} | {m['wall_s']:.2f} | {m['cpu_s']:.1f} |")
    print(
        "| ray / orch | "
        + " | ".join(
            f"{med['ray'][k] / med['orch'][k]:.2f}x" for k in ("first_row_s", "wall_s", "cpu_s")
        )
        + " |"
    )
    print(json.dumps({"workers": args.workers, "pairs": args.pairs, "median": med}))


if __name__ == "__main__":
    main()
