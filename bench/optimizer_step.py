"""Optimizer step time on CPU: torch's for-loop, foreach and fused implementations side by side.

    .venv/bin/python bench/optimizer_step.py                    # ResNet-18 and the MNIST MLP
    .venv/bin/python bench/optimizer_step.py --threads 2 --repeats 50

orchestrator.worker.optim.build_optimizer uses the fused kernels for DDP and one-process runs
(plain tensors). Each row steps the same parameters with random gradients; the median of
`--repeats` timed steps after 3 warm-up steps; ratios against foreach (torch's default).
"""

from __future__ import annotations

import argparse
import statistics
import time


def models():
    import torch
    import torchvision

    yield "ResNet-18 (11.7M)", torchvision.models.resnet18(num_classes=4)
    yield (
        "MNIST MLP 784-512-256-10 (0.54M)",
        torch.nn.Sequential(
            torch.nn.Linear(784, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        ),
    )


def time_steps(opt, repeats: int) -> float:
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a Train worker: 1)")
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), median of {a.repeats} steps")
    print(
        f"{'model':<34} {'optimizer':<8} {'for-loop ms':>11} {'foreach ms':>10} "
        f"{'fused ms':>8} {'fused vs foreach':>16}"
    )
    for name, model in models():
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        for cls in (torch.optim.AdamW, torch.optim.SGD):
            kw = {"momentum": 0.9} if cls is torch.optim.SGD else {}
            ms = {}
            for impl in ("loop", "foreach", "fused"):
                flag = {
                    "loop": {"foreach": False},
                    "foreach": {"foreach": True},
                    "fused": {"fused": True},
                }[impl]
                opt = cls(model.parameters(), lr=1e-3, **kw, **flag)
                ms[impl] = time_steps(opt, a.repeats) * 1000
            print(
                f"{name:<34} {cls.__name__:<8} {ms['loop']:>11.2f} {ms['foreach']:>10.2f} "
                f"{ms['fused']:>8.2f} {ms['foreach'] / ms['fused']:>15.2f}x"
            )


if __name__ == "__main__":
    main()
