"""Pipeline step time against the bubble model, for M = 1, 2, 4, 8 microbatches on 2 stages,
side by side with 2-worker DDP on the same global batch.

    .venv/bin/python bench/pipeline.py                       # wide MLP, batch 256, 2 stages
    .venv/bin/python bench/pipeline.py --hidden 512 256 --batch 64 --steps 40   # the MNIST MLP
    .venv/bin/python bench/pipeline.py --schedule 1f1b --microbatches 2 4 8

Every configuration runs in fresh processes (gloo on CPU, 1 torch thread each, no Ray) through
the same code `orch run` uses: worker.Session with strategy pipeline or ddp, and
sess.train_step (forward, loss, backward, Adam step). Step time: the wall time of `--steps`
steps (between barriers) divided by the steps, on rank 0, in `--windows` windows after 3
warm-up steps; the best window is reported (the machine is shared: the others are slowed by
whatever else runs), and the median beside it.

The bubble model: with S stages and M microbatches a GPipe/1F1B step takes (M + S - 1) slots
of the slowest stage's forward + backward on one microbatch, of which M do work, so
(S-1)/(M+S-1) of it is idle; then each stage steps its optimizer (the slowest one's time is
added). The slowest stage's time per microbatch, t(B/M), is measured here
alone in one process (1 thread) for each microbatch size, so the model also carries what small
microbatches cost in efficiency; measured / model is then what the schedule and the
point-to-point sends add on top. DDP: each worker runs the whole model on B/2 examples and
all-reduces the gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(hidden, batch):
    from jobs import mnist_mlp

    return mnist_mlp.Args(hidden=list(hidden), batch_size=batch, optimizer="adam", lr=1e-3)


def _worker(rank, world, port, cfg, out):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from jobs import mnist_mlp
    from orchestrator.worker import session

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pipe = cfg["mode"] == "pipeline"
    stages = 2 if pipe else 1
    sess = session.Session(
        strategy=cfg["mode"],
        rank=rank,
        world_size=world,
        data_rank=rank // stages,
        data_world_size=world // stages,
        config={
            "workload": "mnist_mlp",
            "pipeline": {
                "stages": 2,
                "microbatches": cfg.get("microbatches", 1),
                "schedule": cfg.get("schedule", "gpipe"),
            },
        },
    )
    session.seed_everything(0)
    args = _args(cfg["hidden"], cfg["batch"])
    model, _, _ = sess.prepare(mnist_mlp.build_model(args), args, 10_000)
    per_replica = cfg["batch"] // sess.data_world_size
    g = torch.Generator().manual_seed(rank // stages)
    x = torch.randn(per_replica, 784, generator=g)
    y = torch.randint(0, 10, (per_replica,), generator=g)
    for _ in range(3):
        sess.train_step(model, x, y, F.cross_entropy)
    windows = []
    for _ in range(cfg["windows"]):
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(cfg["steps"]):
            loss = sess.train_step(model, x, y, F.cross_entropy)
        dist.barrier()
        windows.append((time.perf_counter() - t0) / cfg["steps"])
    if rank == 0:
        Path(out).write_text(json.dumps({"windows": windows, "loss": float(loss)}))
    dist.destroy_process_group()


def run(cfg: dict) -> tuple[float, float]:
    """(best, median) seconds per step of one configuration, in 2 fresh processes."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.json")
        mp.spawn(_worker, args=(2, _free_port(), cfg, out), nprocs=2)
        windows = json.loads(Path(out).read_text())["windows"]
        return min(windows), statistics.median(windows)


def optimizer_times(hidden, batch: int, repeats: int) -> list[float]:
    """Seconds of each of 2 stages' optimizer step (the Session's: fused Adam), 1 thread."""
    import torch

    from jobs import mnist_mlp
    from orchestrator.worker import pipeline
    from orchestrator.worker.optim import build_optimizer

    torch.set_num_threads(1)
    args = _args(hidden, batch)
    chunks, _ = pipeline.cut(mnist_mlp.build_model(args), mnist_mlp, 2)
    out = []
    for chunk in chunks:
        for p in chunk.parameters():
            p.grad = torch.randn_like(p)
        opt = build_optimizer(chunk.parameters(), args, fused=True)
        times = []
        for i in range(repeats + 3):
            t = time.perf_counter()
            opt.step()
            if i >= 3:
                times.append(time.perf_counter() - t)
        out.append(statistics.median(times))
    return out


def stage_times(hidden, batch: int, micro: int, repeats: int) -> list[float]:
    """Forward + backward seconds of each of 2 stages on one microbatch, alone, 1 thread."""
    import torch

    from jobs import mnist_mlp
    from orchestrator.worker import pipeline

    torch.set_num_threads(1)
    torch.manual_seed(0)
    chunks, _ = pipeline.cut(mnist_mlp.build_model(_args(hidden, batch)), mnist_mlp, 2)
    x = torch.randn(micro, 784)
    out = []
    for s, chunk in enumerate(chunks):
        times = []
        for i in range(repeats + 3):
            inp = x.clone().requires_grad_(s > 0)
            t = time.perf_counter()
            y = chunk(inp)
            y.float().pow(2).mean().backward()
            if i >= 3:
                times.append(time.perf_counter() - t)
        out.append(statistics.median(times))
        with torch.no_grad():
            x = chunk(x)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hidden", type=int, nargs="+", default=[2048, 2048, 2048, 2048])
    ap.add_argument("--batch", type=int, default=256, help="examples per step (global)")
    ap.add_argument("--microbatches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--schedule", default="gpipe", choices=["gpipe", "1f1b"])
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=5)
    a = ap.parse_args(argv)
    import torch

    from orchestrator.worker import pipeline

    shape = "-".join(str(h) for h in [784, *a.hidden, 10])
    print(
        f"MLP {shape}, batch {a.batch} per step, 2 stages, schedule {a.schedule}; torch "
        f"{torch.__version__}, gloo, 1 thread per process, {os.cpu_count()} CPUs; "
        f"best of {a.windows} windows of {a.steps} steps after 3 warm-up (median in brackets)"
    )
    common = {"hidden": a.hidden, "batch": a.batch, "steps": a.steps, "windows": a.windows}
    ddp, ddp_med = run({"mode": "ddp", **common})
    whole = sum(stage_times(a.hidden, a.batch, a.batch, a.steps))
    opt = optimizer_times(a.hidden, a.batch, a.steps)
    print(
        f"one process, whole model, batch {a.batch}: {whole * 1e3:.1f} ms fwd+bwd + "
        f"{sum(opt) * 1e3:.1f} ms Adam step; optimizer step per stage: "
        f"{', '.join(f'{o * 1e3:.1f}' for o in opt)} ms; "
        f"DDP 2 workers x {a.batch // 2}: {ddp * 1e3:.1f} ms/step [{ddp_med * 1e3:.1f}]"
    )
    head = (
        f"{'M':>2} {'bubble':>6} {'t(B/M) ms':>9} {'model ms':>8} {'measured ms':>17} "
        f"{'measured/model':>14} {'pipeline/DDP':>12}"
    )
    print(head)
    for m in a.microbatches:
        t = max(stage_times(a.hidden, a.batch, a.batch // m, a.steps))
        model = (m + 2 - 1) * t + max(opt)
        sched = a.schedule if m >= 2 else "gpipe"  # 1F1B needs M >= S
        measured, med = run({"mode": "pipeline", **common, "microbatches": m, "schedule": sched})
        both = f"{measured * 1e3:.1f} [{med * 1e3:.1f}]"
        print(
            f"{m:>2} {pipeline.bubble_fraction(2, m):>6.1%} {t * 1e3:>9.2f} "
            f"{model * 1e3:>8.1f} {both:>17} {measured / model:>14.2f} "
            f"{measured / ddp:>12.2f}"
        )


if __name__ == "__main__":
    main()
