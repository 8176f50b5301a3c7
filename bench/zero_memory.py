"""Measured per-rank bytes of parameters, gradients and optimizer states under DDP, FSDP and
ZeRO-1/2/3, beside the memory planner's figure (orchestrator/memory.py), at 2 workers.

    python bench/zero_memory.py                      # MNIST MLP, fp32 and bf16, 2 ranks (gloo)
    python bench/zero_memory.py --precision bf16 --hidden 1024 1024 --markdown out.md

Two processes (torch.multiprocessing, gloo on CPU) run each option through the same Session
that workloads use (orchestrator.strategy), take one optimizer step so the optimizer state
exists, then measure on the second step (orchestrator.memory.held_bytes, each storage once):

  params, optimizer   when the optimizer steps (wrapped torch optimizer's step())
  grads               16-bit/param gradients right after backward, plus the fp32 gradient
                      partition DeepSpeed builds for its optimizer at step time (the two
                      coexist while DeepSpeed copies one into the other)

The planner's "engine" breakdown is compared per component; the ratio column is measured /
planned and should lie within 0.9-1.1. ZeRO-3's gather buffer (4 x largest layer) is
transient and not measured. Not measured either: DDP buckets (gradient_as_bucket_view shares
them with the gradients) and DeepSpeed's IPG bucket (reduce_bucket_size, up to 5e8 elements).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTIONS = {  # option -> (strategy, deepspeed stage)
    "ddp": ("ddp", None),
    "fsdp": ("fsdp", None),
    "zero1": ("deepspeed", 1),
    "zero2": ("deepspeed", 2),
    "zero3": ("deepspeed", 3),
}


def _measure_one(option: str, precision: str, hidden: list[int], batch: int) -> dict:
    import torch
    import torch.nn.functional as F

    from jobs import mnist_mlp
    from orchestrator import memory, strategy

    kind, stage = OPTIONS[option]
    config = {"strategy": kind, "precision": precision, "seed": 0,
              "deepspeed": {"stage": stage}, "train": {"batch_size": batch}}
    sess = strategy.setup(config)
    args = mnist_mlp.Args(hidden=hidden, batch_size=batch, optimizer="adam")
    model, opt, _ = sess.prepare(mnist_mlp.build_model(args), args, total_steps=10)
    g = torch.Generator().manual_seed(sess.rank)
    x, y = torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def loss_fn():
        with sess.autocast():
            return F.cross_entropy(model(x), y).float()

    sess.backward(loss_fn())  # step 1: the optimizer state now exists
    seen: dict[str, dict] = {}
    inner = sess.engine.optimizer if sess.engine is not None else sess.optimizer
    inner = getattr(inner, "optimizer", inner)  # DeepSpeed wraps the torch optimizer
    step = inner.step

    def measuring_step(*a, **k):
        seen["at_step"] = memory.held_bytes(sess)
        return step(*a, **k)

    inner.step = measuring_step
    loss = loss_fn()
    if sess.engine is not None:
        sess.engine.backward(loss)
        seen["after_backward"] = memory.held_bytes(sess)
        sess.engine.step()
    else:
        loss.backward()
        seen["after_backward"] = memory.held_bytes(sess)
        opt.step()
        opt.zero_grad(set_to_none=True)
    at, ab = seen["at_step"], seen["after_backward"]
    if sess.engine is not None:
        # 16-bit partitions after backward + the fp32 partition built at step time.
        grads = ab["grads"] + at.get("grads_fp32", 0.0)
    else:
        grads = at["grads"]
    n_params = sum(p.numel() for p in mnist_mlp.build_model(args).parameters())
    return {"option": option, "precision": precision, "rank": sess.rank,
            "params": at["params"], "grads": grads, "optimizer": at["optimizer"],
            "psi": n_params}


def _worker(rank: int, world: int, port: int, precisions: list[str], hidden: list[int],
            batch: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    rows = []
    for precision in precisions:
        for option in OPTIONS:
            rows.append(_measure_one(option, precision, hidden, batch))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rows))


def measure(precisions: list[str], hidden: list[int], batch: int = 32, world: int = 2) -> list[dict]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(world, port, precisions, hidden, batch, out), nprocs=world)
        rows = []
        for r in range(world):
            rows += json.loads(Path(out, f"rank{r}.json").read_text())
    return rows


def planned(option: str, psi: int, largest: int, world: int, precision: str) -> dict:
    from orchestrator import memory

    st = memory.engine_states(option, psi, world, precision, memory.optimizer_state_bytes("adam"),
                              largest)
    return {"params": st.params, "grads": st.grads, "optimizer": st.optimizer}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--hidden", nargs="+", type=int, default=[512, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--markdown", default=None, help="also write the table here")
    ns = ap.parse_args(argv)

    import torch

    from jobs import mnist_mlp
    from orchestrator import memory

    with torch.device("meta"):
        count = memory.count_parameters(mnist_mlp.build_model(mnist_mlp.Args(hidden=ns.hidden)))
    t0 = time.time()
    rows = measure(ns.precision, ns.hidden, ns.batch)
    lines = [f"MNIST MLP 784-{'-'.join(map(str, ns.hidden))}-10: {count.total:,} parameters "
             f"(largest layer {count.largest_layer:,}), 2 ranks, Adam; bytes per rank "
             f"(measured / planned = ratio); {time.time() - t0:.0f} s",
             "",
             "| option | precision | rank | params | grads | optimizer | worst ratio |",
             "|---|---|---|---|---|---|---|"]
    worst_all = 1.0
    for r in rows:
        plan = planned(r["option"], count.trainable, count.largest_layer, 2, r["precision"])
        cells, worst = [], 1.0
        for k in ("params", "grads", "optimizer"):
            m, p = r[k], plan[k]
            ratio = m / p if p else (1.0 if m == 0 else float("inf"))
            worst = ratio if abs(ratio - 1) > abs(worst - 1) else worst
            cells.append(f"{m / 1e6:.3f} / {p / 1e6:.3f} MB = {ratio:.3f}")
        worst_all = worst if abs(worst - 1) > abs(worst_all - 1) else worst_all
        lines.append(f"| {r['option']} | {r['precision']} | {r['rank']} | " + " | ".join(cells)
                     + f" | {worst:.3f} |")
    lines.append("")
    lines.append(f"worst ratio over all cells: {worst_all:.3f} "
                 f"({'within' if abs(worst_all - 1) <= 0.10 else 'OUTSIDE'} 10%)")
    text = "\n".join(lines)
    print(text)
    if ns.markdown:
        Path(ns.markdown).write_text(text + "\n")
    return 0 if abs(worst_all - 1) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
