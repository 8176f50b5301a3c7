"""bf16 against fp32 on the same seeds: loss curves side by side and the step-time ratio.

    python bench/precision.py                                  # MNIST MLP, 200 steps each
    python bench/precision.py --steps 300 --png docs/precision_bf16_vs_fp32.png --markdown out.md

One process, no Ray: the same Session the workloads use (orchestrator.worker, strategy ddp
at world size 1), the same data order and initial weights for both precisions (seed 0);
bf16 is torch.autocast on CPU. The runs alternate in blocks of 25 steps so that a neighbour
on a shared machine slows both alike; step time is the median over each run's steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _session(precision: str, hidden: list[int], batch: int, steps: int):
    from jobs import mnist_mlp
    from orchestrator import worker

    sess = worker.setup({"strategy": "ddp", "precision": precision, "seed": 0})
    args = mnist_mlp.Args(hidden=hidden, batch_size=batch, optimizer="adam", lr=1e-3)
    model, _, _ = sess.prepare(mnist_mlp.build_model(args), args, steps)
    return sess, model


def run(steps: int, hidden: list[int], batch: int, block: int = 25) -> dict[str, dict]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from jobs import mnist_mlp

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = mnist_mlp.load_mnist(mnist_mlp.DataArgs())
    order = np.random.RandomState(0).permutation(len(xtr))
    runs = {
        p: {"session": _session(p, hidden, batch, steps), "loss": [], "time": []}
        for p in ("fp32", "bf16")
    }
    for start in range(0, steps, block):
        for _p, r in runs.items():
            sess, model = r["session"]
            for i in range(start, min(steps, start + block)):
                idx = order[(i * batch) % len(order) :][:batch]
                if len(idx) < batch:
                    idx = order[:batch]
                x, y = torch.from_numpy(xtr[idx]), torch.from_numpy(ytr[idx])
                t = time.perf_counter()
                with sess.autocast():
                    loss = F.cross_entropy(model(x), y)
                sess.backward(loss)
                r["time"].append(time.perf_counter() - t)
                r["loss"].append(float(loss))
    out = {}
    for p, r in runs.items():
        sess, model = r["session"]
        with torch.no_grad(), sess.autocast():
            acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
        out[p] = {"loss": r["loss"], "step_s": statistics.median(r["time"]), "accuracy": acc}
    return out


def smooth(xs: list[float], k: int = 10) -> list[float]:
    return [
        sum(xs[max(0, i - k + 1) : i + 1]) / len(xs[max(0, i - k + 1) : i + 1])
        for i in range(len(xs))
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--hidden", nargs="+", type=int, default=[512, 256])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--png", default=None, help="write the loss curves here")
    ap.add_argument("--markdown", default=None, help="write the table here")
    ns = ap.parse_args(argv)
    t0 = time.time()
    res = run(ns.steps, ns.hidden, ns.batch)
    f32, b16 = res["fp32"], res["bf16"]
    ratio = b16["step_s"] / f32["step_s"]
    marks = sorted({0, 9, 24, 49, 99, ns.steps - 1} & set(range(ns.steps)))
    lines = [
        f"MNIST MLP 784-{'-'.join(map(str, ns.hidden))}-10, batch {ns.batch}, Adam 1e-3, "
        f"seed 0, {ns.steps} steps each, one process; {time.time() - t0:.0f} s",
        "",
        "| step | fp32 loss (10-step mean) | bf16 loss (10-step mean) |",
        "|---|---|---|",
    ]
    s32, s16 = smooth(f32["loss"]), smooth(b16["loss"])
    for i in marks:
        lines.append(f"| {i + 1} | {s32[i]:.4f} | {s16[i]:.4f} |")
    lines += [
        "",
        "| | fp32 | bf16 | bf16 / fp32 |",
        "|---|---|---|---|",
        f"| median step time | {f32['step_s'] * 1e3:.2f} ms "
        f"| {b16['step_s'] * 1e3:.2f} ms | {ratio:.2f} |",
        f"| test accuracy after {ns.steps} steps | {f32['accuracy']:.4f} "
        f"| {b16['accuracy']:.4f} | |",
    ]
    text = "\n".join(lines)
    print(text)
    if ns.markdown:
        Path(ns.markdown).write_text(text + "\n")
    if ns.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        steps = range(1, ns.steps + 1)
        ax.plot(steps, f32["loss"], color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(steps, b16["loss"], color="tab:orange", alpha=0.25, lw=0.8)
        ax.plot(steps, s32, color="tab:blue", label=f"fp32 ({f32['step_s'] * 1e3:.1f} ms/step)")
        ax.plot(
            steps,
            s16,
            color="tab:orange",
            label=f"bf16 autocast ({b16['step_s'] * 1e3:.1f} ms/step)",
        )
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (faint: per step; solid: 10-step mean)")
        ax.set_yscale("log")
        ax.set_title("MNIST MLP, same seed: bf16 vs fp32 (CPU)")
        ax.legend()
        fig.tight_layout()
        Path(ns.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(ns.png, dpi=110)
        print(f"wrote {ns.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
