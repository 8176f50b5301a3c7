"""Tune overhead: N short MNIST trials through `orch sweep` vs the same trials back to back.

    .venv/bin/python bench/tune_overhead.py                 # 4 trials x 40 steps, 1 worker each
    .venv/bin/python bench/tune_overhead.py --trials 8 --steps 100

One local Ray (2 logical CPUs) serves both sides, started once before either is timed:

  back to back   each trial is `orch run`'s launcher (orchestrator.launch.launch: one
                 TorchTrainer, ledger rows), one after another, no Tune
  sweep (train)  the same N learning rates as a grid sweep (orchestrator.sweep.driver.run_sweep),
                 max_concurrent 1 so the trials also run one after another, no scheduler,
                 each trial a Ray Train run of its own (sweep.in_process: false)
  sweep          the same sweep as orch sweep runs it by default: each 1-worker trial trains
                 in its Tune trial's own process, reused by the next trial

The three sides alternate within each round (--rounds); the table gives medians.

The ratio (sweep / back to back) is Tune's cost per trial: trial actor, result forwarding,
the Tune checkpoint copy of every Train checkpoint, experiment-state snapshots, ledger rows
and the summary/plot. Ray's own Tune scalability target allows 1.28x and reached 1.14x
(its trials are long; ours are seconds, which makes the fixed costs loom larger).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spec_dict(storage: str, steps: int, lrs: list[float], in_process: bool = True) -> dict:
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
            "in_process": in_process,
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
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the three sides (medians)")
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
    times: dict[str, list[float]] = {"back to back": [], "sweep (train)": [], "sweep": []}
    finals: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        base = validate_spec(spec_dict(str(Path(tmp) / "plain"), ns.steps, lrs))
        # Warm-up (imports, dataset, first worker processes), not timed.
        warm = validate_spec(set_dotted(trial_base(base), "name", "warmup"))
        launch(plan(warm), console=quiet)

        def back_to_back(r: int) -> list[float]:
            trained, losses = set(), []
            for i, lr in enumerate(lrs):
                d = set_dotted(set_dotted(trial_base(base), "train.lr", lr), "name", f"r{r}t{i}")
                s = launch(plan(validate_spec(d)), console=quiet)
                assert s["status"] == "SUCCEEDED", s["error"]
                trained.add(int(s["metrics"].get("step", -1)))
                losses.append(float(s["metrics"]["loss"]))
            assert trained == {ns.steps}, f"trials trained {sorted(trained)} steps, not {ns.steps}"
            return losses

        def sweep(r: int, in_process: bool) -> list[float]:
            d = spec_dict(str(Path(tmp) / f"sweep{r}{int(in_process)}"), ns.steps, lrs, in_process)
            summary = run_sweep(validate_spec(d), sweep_id="bench", console=quiet, live_every_s=1e9)
            assert summary["status"] == "SUCCEEDED", summary.get("error")
            assert len(summary["trials"]) == ns.trials
            by_lr = {t["config"]["train.lr"]: t for t in summary["trials"]}
            return [float(by_lr[lr]["loss"]) for lr in lrs]

        for r in range(ns.rounds):
            for side in times:
                t0 = time.perf_counter()
                if side == "back to back":
                    got = back_to_back(r)
                else:
                    got = sweep(r, in_process=side == "sweep")
                times[side].append(time.perf_counter() - t0)
                finals[side] = got
                print(f"round {r + 1} {side:14s} {times[side][-1]:6.1f} s", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    plain = med["back to back"]
    print(f"\n{ns.trials} trials x {ns.steps} steps (MNIST MLP, 1 worker each)", end="")
    print(f", medians of {ns.rounds} round(s)")
    for side, t in med.items():
        print(
            f"  {side:14s} {t:7.1f} s  ({t / ns.trials:.1f} s/trial)  "
            f"{t / plain:6.3f}x back to back"
        )
    print("  (Ray's Tune target: <= 1.28x; issue 24's goal: <= 1.15x)")
    # The same trials, the same seed: each side's final losses, trial by trial.
    print("  final loss per trial: " + "; ".join(f"{k} {v}" for k, v in finals.items()))
    result = {
        "trials": ns.trials,
        "steps_per_trial": ns.steps,
        "rounds": ns.rounds,
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "ratio_over_back_to_back": {k: round(v / plain, 3) for k, v in med.items()},
        "final_loss": finals,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
