"""Tune overhead: N short MNIST trials through `orch sweep` vs the same trials back to back.

    .venv/bin/python bench/tune_overhead.py                 # 4 trials x 40 steps, 1 worker each
    .venv/bin/python bench/tune_overhead.py --trials 8 --steps 100

One local Ray (2 logical CPUs) serves both sides, started once before either is timed:

  back to back   each trial is `orch run`'s launcher (orchestrator.launch.launch: one
                 TorchTrainer, ledger rows), one after another, no Tune
  orch sweep     the same N learning rates as a grid sweep (orchestrator.sweep.driver.run_sweep),
                 max_concurrent 1 so the trials also run one after another, no scheduler

The ratio (sweep / back to back) is Tune's cost per trial: trial actor, result forwarding,
the Tune checkpoint copy of every Train checkpoint, experiment-state snapshots, ledger rows
and the summary/plot. Ray's own Tune scalability target allows 1.28x and reached 1.14x
(its trials are long; ours are seconds, which makes the fixed costs loom larger).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spec_dict(storage: str, steps: int, lrs: list[float]) -> dict:
    return {
        "name": "tune-bench",
        "workload": "mnist_mlp",
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "train": {
            # max_steps decides the length: epochs: 1 capped trials at one epoch (125 steps of
            # batch 32), whatever --steps asked for.
            "epochs": 1000,
            "max_steps": steps,
            "batch_size": 32,
            "hidden": [64],
            "log_every": max(1, steps // 4),
        },
        "checkpoint": {"every_steps": max(1, steps // 2), "keep": 2},
        "storage_path": storage,
        "sweep": {
            "metric": "loss",
            "mode": "min",
            "num_samples": 1,
            "max_concurrent": 1,
            "algorithm": "grid",
            "search_space": {"train.lr": {"grid": lrs}},
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--cpus", type=int, default=2)
    ns = ap.parse_args(argv)

    from rich.console import Console

    from orchestrator import runtime
    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.spec import validate_spec
    from orchestrator.sweep.driver import run_sweep
    from orchestrator.sweep.spec import set_dotted, trial_base

    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    lrs = [round(1e-3 * (1.5**i), 6) for i in range(ns.trials)]
    runtime.connect(num_cpus=ns.cpus)
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        base = validate_spec(spec_dict(str(Path(tmp) / "plain"), ns.steps, lrs))
        # Warm-up (imports, dataset, first worker processes), not timed.
        warm = validate_spec(set_dotted(trial_base(base), "name", "warmup"))
        launch(plan(warm), console=quiet)

        t0 = time.perf_counter()
        trained = set()
        for i, lr in enumerate(lrs):
            d = set_dotted(set_dotted(trial_base(base), "train.lr", lr), "name", f"trial{i}")
            s = launch(plan(validate_spec(d)), console=quiet)
            assert s["status"] == "SUCCEEDED", s["error"]
            trained.add(int(s["metrics"].get("step", -1)))
        plain = time.perf_counter() - t0
        assert trained == {ns.steps}, f"trials trained {sorted(trained)} steps, not {ns.steps}"

        sweep_spec = validate_spec(spec_dict(str(Path(tmp) / "sweep"), ns.steps, lrs))
        t0 = time.perf_counter()
        summary = run_sweep(sweep_spec, sweep_id="bench", console=quiet, live_every_s=1e9)
        swept = time.perf_counter() - t0
        assert summary["status"] == "SUCCEEDED", summary.get("error")
        assert len(summary["trials"]) == ns.trials

    result = {
        "trials": ns.trials,
        "steps_per_trial": ns.steps,
        "back_to_back_s": round(plain, 2),
        "orch_sweep_s": round(swept, 2),
        "per_trial_back_to_back_s": round(plain / ns.trials, 2),
        "per_trial_sweep_s": round(swept / ns.trials, 2),
        "ratio_sweep_over_back_to_back": round(swept / plain, 3),
    }
    print(f"{ns.trials} trials x {ns.steps} steps (MNIST MLP, 1 worker each)")
    print(
        f"  back to back (orch run launcher, no Tune): {plain:7.1f} s  "
        f"({plain / ns.trials:.1f} s/trial)"
    )
    print(
        f"  orch sweep (Tune, max_concurrent 1):       {swept:7.1f} s  "
        f"({swept / ns.trials:.1f} s/trial)"
    )
    print(
        f"  ratio sweep / back to back:                {swept / plain:7.3f}x  "
        "(Ray's target: <= 1.28x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
