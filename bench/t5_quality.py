"""How good does the default T5 translation spec get within a CPU budget? Greedy vs beam side by
side.

    python bench/t5_quality.py                                # jobs/t5_translation.yaml, 1500 CPU-s
    python bench/t5_quality.py --cpu-budget 600 --wall-budget 1800
    # a smoke run
    python bench/t5_quality.py train.max_steps=50 data.n_test=50 --png /tmp/curve.png

Trains the spec through `orch run`'s own path (plan -> Ray Train, 2 DDP workers), with
`train.cpu_budget_s` set so that training stops once the workers together have used that many
CPU-seconds (process CPU time, summed over workers and checked every log_every steps; Ray's own
processes are not counted). Then the job decodes the held-out test numbers greedily and with
beam search and reports sacreBLEU BLEU, chrF and exact match for both. This script prints them
side by side with beam/greedy ratios, and draws the learning curve (train and validation loss,
validation exact match and chrF against step and CPU-seconds) to docs/t5_learning_curve.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plot(rows: list[dict], final: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [r for r in rows if "loss" in r and "step" in r and "test_pairs" not in r]
    va = [r for r in tr if "val_exact_match" in r]
    # the same validation figures repeat on rows until the next check: keep the first of each
    seen, checks = set(), []
    for r in va:
        key = (r["val_loss"], r["val_exact_match"], r["val_chrf"])
        if key not in seen:
            seen.add(key)
            checks.append(r)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(
        [r["step"] for r in tr], [r["loss"] for r in tr], lw=0.8, label="train loss (last batch)"
    )
    a.plot(
        [r["step"] for r in checks], [r["val_loss"] for r in checks], "o-", label="validation loss"
    )
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("token cross-entropy")
    a.legend()
    a.grid(alpha=0.3)
    steps = [r["step"] for r in checks]
    b.plot(
        steps,
        [100 * r["val_exact_match"] for r in checks],
        "o-",
        label="val exact match % (greedy)",
    )
    b.plot(steps, [r["val_chrf"] for r in checks], "s-", label="val chrF (greedy)")
    if final:
        s = final.get("step", steps[-1] if steps else 0)
        b.plot(
            [s],
            [100 * final["greedy_exact_match"]],
            "k*",
            ms=12,
            label="test exact match % (greedy)",
        )
        b.plot(
            [s],
            [100 * final["beam_exact_match"]],
            "r*",
            ms=12,
            label=f"test exact match % (beam {final.get('num_beams')})",
        )
    b.set_ylim(0, 101)
    b.set_xlabel("step")
    b.grid(alpha=0.3)
    b.legend(loc="lower right")
    if checks and "cpu_s" in checks[-1]:
        top = b.secondary_xaxis("top", functions=_step_to_cpu(checks))
        top.set_xlabel("CPU-seconds, all workers")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _step_to_cpu(checks):
    import numpy as np

    xs = np.array([0.0] + [r["step"] for r in checks])
    ys = np.array([0.0] + [r["cpu_s"] for r in checks])
    return (lambda s: np.interp(s, xs, ys), lambda c: np.interp(c, ys, xs))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("overrides", nargs="*", help="dotted spec overrides, e.g. train.max_steps=200")
    ap.add_argument("--spec", default=str(ROOT / "jobs" / "t5_translation.yaml"))
    ap.add_argument(
        "--cpu-budget",
        type=float,
        default=1500.0,
        help="CPU-seconds of training, all workers together (default 1500 = 25 min)",
    )
    ap.add_argument(
        "--wall-budget",
        type=float,
        default=None,
        help="also stop training after this many wall-clock seconds",
    )
    ap.add_argument("--storage", default="/tmp/orch-bench-t5", help="storage_path for the run")
    ap.add_argument("--png", default=str(ROOT / "docs" / "t5_learning_curve.png"))
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads with --no-ray (1, as Ray gives each worker; more threads "
        "spin-wait for each other on a loaded machine)",
    )
    ap.add_argument(
        "--no-ray",
        action="store_true",
        help="run the spec's worker loop in this process (1 worker, batch x workers: the "
        "same global batch) instead of Ray Train; for a machine too loaded to start Ray",
    )
    ns = ap.parse_args(argv)

    from orchestrator import rundir
    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.spec import load_spec

    overrides = [f"train.cpu_budget_s={ns.cpu_budget}", f"storage_path={ns.storage}", *ns.overrides]
    if ns.wall_budget:
        overrides.append(f"train.time_budget_s={ns.wall_budget}")
    spec = load_spec(ns.spec, overrides)
    p = plan(spec, run_name="t5-quality", fresh=True)
    t0 = time.time()
    if ns.no_ray:
        import torch

        from jobs import t5_translation

        torch.set_num_threads(ns.threads)
        config = p.worker.to_dict()
        config["train"]["batch_size"] *= p.num_workers
        Path(p.run_dir).mkdir(parents=True, exist_ok=True)
        final = t5_translation.train_loop(config)
    else:
        summary = launch(p)
        if summary["status"] != "SUCCEEDED":
            print(f"run failed: {summary.get('error')}", file=sys.stderr)
            sys.exit(1)
        final = summary["metrics"]
    wall = time.time() - t0
    rows = rundir.read_metrics(p.run_dir)
    final = next((r for r in reversed(rows) if "beam_exact_match" in r), final)
    t = spec.train
    title = (
        f"T5 d_model {t['d_model']}, {t['num_layers']}+{t['num_layers']} layers, ByT5 bytes; "
        f"num2words en->fr 0..{spec.data['max_number']}, test numbers unseen; "
        f"{1 if ns.no_ray else spec.resources.workers} worker(s), global batch "
        f"{t['batch_size'] * spec.resources.workers}, {spec.precision}"
    )
    plot(rows, final, Path(ns.png), title)

    print(f"\nrun dir {p.run_dir}; learning curve {ns.png}")
    print(
        f"stopped: {final.get('stopped_early')}; step {final.get('step')}, "
        f"epoch {final.get('epoch')}, "
        f"training CPU {final.get('cpu_s', 0):.0f} s (all workers), wall {wall:.0f} s "
        f"(with Ray start-up "
        f"and the test decode)"
    )
    print(
        f"\n{'test, ' + str(final['test_pairs']) + ' held-out numbers':<34}{'greedy':>10}"
        f"{'beam ' + str(final['num_beams']):>10}{'beam/greedy':>13}"
    )
    for key, label, scale in (
        ("bleu", "BLEU", 1),
        ("chrf", "chrF", 1),
        ("exact_match", "exact match %", 100),
        ("decode_s", "decode time s (wall)", 1),
    ):
        g, b = final[f"greedy_{key}"] * scale, final[f"beam_{key}"] * scale
        ratio = b / g if g else float("nan")
        print(f"{label:<34}{g:>10.2f}{b:>10.2f}{ratio:>13.2f}")
    print(
        f"final validation: loss {final.get('val_loss', float('nan')):.4f}, exact match "
        f"{100 * final.get('val_exact_match', 0):.1f}%, chrF {final.get('val_chrf', 0):.2f}"
    )
    ex = Path(p.run_dir) / "examples.md"
    if ex.exists():
        print("\n" + ex.read_text())
    out = {"final": final, "wall_s": wall, "run_dir": p.run_dir}
    (Path(p.run_dir) / "bench_t5_quality.json").write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
