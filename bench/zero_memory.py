"""Measured per-rank bytes of parameters, gradients and optimizer states under DDP, FSDP and
ZeRO-1/2/3, beside the memory planner's figure (orchestrator/memory.py), at 2 workers.

    python bench/zero_memory.py                      # MNIST MLP, fp32 and bf16, 2 ranks (gloo)
    python bench/zero_memory.py --precision bf16 --hidden 1024 1024 --markdown out.md

Two processes (torch.multiprocessing, gloo on CPU) run each option through the same Session
that workloads use (orchestrator.worker), take one optimizer step so the optimizer state
exists, then measure on the second step (orchestrator.memory.held_bytes, each storage once):

  params, optimizer   when the optimizer steps (wrapped torch optimizer's step())
  grads               torch: param.grad at the step. DeepSpeed: the 16-bit gradients it keeps
                      right after backward plus the fp32 gradient partition it builds for its
                      optimizer at step time (the two coexist while DeepSpeed copies one into
                      the other), a storage seen after backward not counted again at the step;
                      ZeRO-1/2: or, if more, the gradients in flight at the end of backward
                      (on entry to engine.allreduce_gradients: ZeRO-1 all of them, ZeRO-2 the
                      filled part of its reduce bucket; memory.in_flight_grad_bytes)

The planner's "engine" breakdown is compared per component, ZeRO-1/2 with the figure for the
rank measured (engine_states with param_sizes and rank: a rank keeps the gradients of the
parameters overlapping its slice of DeepSpeed's flat buffer); the ratio column is measured /
planned and should lie within 0.9-1.1. A second table splits ZeRO-1/2's gradients by moment,
shows what a rank holds while it reduces (the filled bucket beside the buffer of the gradients
it keeps: reported, not planned), and checks that the rank-free figure (the upper bound that
`strategy: auto` uses) is at least what each rank measured. ZeRO-3's gather buffer (4 x largest
layer) is transient and not measured. Not measured either: DDP buckets
(gradient_as_bucket_view shares them with the gradients) and the unfilled rest of DeepSpeed's
IPG bucket (reduce_bucket_size, 5e8 elements, allocated whole during backward).
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
    from orchestrator import memory, worker

    kind, stage = OPTIONS[option]
    config = {
        "strategy": kind,
        "precision": precision,
        "seed": 0,
        "deepspeed": {"stage": stage},
        "train": {"batch_size": batch},
    }
    sess = worker.setup(config)
    args = mnist_mlp.Args(hidden=hidden, batch_size=batch, optimizer="adam")
    model, opt, _ = sess.prepare(mnist_mlp.build_model(args), args, total_steps=10)
    g = torch.Generator().manual_seed(sess.rank)
    x, y = torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def loss_fn():
        with sess.autocast():
            return F.cross_entropy(model(x), y).float()

    sess.backward(loss_fn())  # step 1: the optimizer state now exists
    seen: dict = {}
    inner = sess.engine.optimizer if sess.engine is not None else sess.optimizer
    inner = getattr(inner, "optimizer", inner)  # DeepSpeed wraps the torch optimizer
    step = inner.step

    grads_seen: dict = {}  # gradient storages counted after backward are not counted again

    def measuring_step(*a, **k):
        seen["at_step"] = memory.held_bytes(sess, grads_seen if sess.engine is not None else None)
        return step(*a, **k)

    inner.step = measuring_step
    if stage in (1, 2):
        reduce = sess.engine.allreduce_gradients

        def measuring_reduce(*a, **k):
            seen["in_flight"] = memory.in_flight_grad_bytes(sess)
            return reduce(*a, **k)

        sess.engine.allreduce_gradients = measuring_reduce
        # During the reduction, after each gradient is copied into the buffer of those the rank
        # keeps: the filled bucket and that buffer coexist (reported, not planned).
        zopt = sess.engine.optimizer
        copy_in = zopt.copy_grads_in_partition

        def measuring_copy(*a, **k):
            out = copy_in(*a, **k)
            seen["reducing"] = max(seen.get("reducing", 0.0), memory.in_flight_grad_bytes(sess))
            return out

        zopt.copy_grads_in_partition = measuring_copy
    loss = loss_fn()
    if sess.engine is not None:
        sess.engine.backward(loss)
        seen["after_backward"] = memory.held_bytes(sess, grads_seen)
        sess.engine.step()
    else:
        loss.backward()
        seen["after_backward"] = memory.held_bytes(sess)
        opt.step()
        opt.zero_grad(set_to_none=True)
    at, ab = seen["at_step"], seen["after_backward"]
    if sess.engine is not None:
        # The 16-bit gradients kept after backward + the fp32 partition built at step time
        # (new storage only: in fp32 it can be a view of the 16-bit buffer); ZeRO-1/2: or the
        # gradients in flight at the end of backward, if more.
        grads = max(seen.get("in_flight", 0.0), ab["grads"] + at.get("grads_fp32", 0.0))
    else:
        grads = at["grads"]
    return {
        "option": option,
        "precision": precision,
        "rank": sess.rank,
        "params": at["params"],
        "grads": grads,
        "optimizer": at["optimizer"],
        "in_flight": seen.get("in_flight"),
        "reducing": seen.get("reducing"),
        "after_backward": ab["grads"],
        "fp32_at_step": at.get("grads_fp32"),
    }


def _worker(
    rank: int,
    world: int,
    port: int,
    precisions: list[str],
    hidden: list[int],
    batch: int,
    out_dir: str,
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch

    torch.set_num_threads(1)
    rows = []
    for precision in precisions:
        for option in OPTIONS:
            rows.append(_measure_one(option, precision, hidden, batch))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rows))


def measure(
    precisions: list[str], hidden: list[int], batch: int = 32, world: int = 2
) -> list[dict]:
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


def planned(option: str, count, world: int, precision: str, rank: int | None = None) -> dict:
    """The planner's figures for `rank` (ZeRO-1/2 differ by rank; the others do not)."""
    from orchestrator import memory

    st = memory.engine_states(
        option,
        count.trainable,
        world,
        precision,
        memory.optimizer_state_bytes("adam"),
        count.largest_layer,
        param_sizes=count.sizes,
        rank=rank,
    )
    return {"params": st.params, "grads": st.grads, "optimizer": st.optimizer}


def _ratio(m: float, p: float) -> float:
    return m / p if p else (1.0 if m == 0 else float("inf"))


def _worse(a: float, b: float) -> float:
    return a if abs(a - 1) > abs(b - 1) else b


def _cell(m: float, p: float) -> str:
    return f"{m / 1e6:.3f} / {p / 1e6:.3f} MB = {_ratio(m, p):.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--hidden", nargs="+", type=int, default=[512, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--markdown", default=None, help="also write the table here")
    ns = ap.parse_args(argv)

    import torch

    from jobs import mnist_mlp
    from orchestrator import memory

    world = 2
    with torch.device("meta"):
        count = memory.count_parameters(mnist_mlp.build_model(mnist_mlp.Args(hidden=ns.hidden)))
    parts = memory.zero_partitions(count.sizes, world)
    t0 = time.time()
    rows = measure(ns.precision, ns.hidden, ns.batch, world)
    lines = [
        f"MNIST MLP 784-{'-'.join(map(str, ns.hidden))}-10: {count.total:,} parameters "
        f"(largest layer {count.largest_layer:,}), {world} ranks, Adam; bytes per rank "
        f"(measured / planned for that rank = ratio); {time.time() - t0:.0f} s",
        "",
        "| option | precision | rank | params | grads | optimizer | worst ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    worst_all = 1.0
    for r in rows:
        plan = planned(r["option"], count, world, r["precision"], r["rank"])
        cells, worst = [], 1.0
        for k in ("params", "grads", "optimizer"):
            worst = _worse(_ratio(r[k], plan[k]), worst)
            cells.append(_cell(r[k], plan[k]))
        worst_all = _worse(worst, worst_all)
        lines.append(
            f"| {r['option']} | {r['precision']} | {r['rank']} | "
            + " | ".join(cells)
            + f" | {worst:.3f} |"
        )

    # ZeRO-1/2 gradients moment by moment, against the per-rank layout.
    lines += [
        "",
        "ZeRO-1/2 flat layout (padded to a multiple of 2 x ranks): "
        + "; ".join(
            f"rank {p.rank} slice [{p.start:,}, {p.end:,}) overlaps parameters "
            f"{list(p.params)} = {p.kept:,} elements kept, {p.padding} padding"
            for p in parts
        ),
        "",
        "| option | precision | rank | end of backward (in flight) | kept after reducing + "
        "new fp32 at step | during reduction (bucket + kept, not planned) | upper bound "
        "(no rank) / measured |",
        "|---|---|---|---|---|---|---|",
    ]
    k = memory.optimizer_state_bytes("adam")
    for r in rows:
        if r["option"] not in ("zero1", "zero2"):
            continue
        opt, prec = r["option"], r["precision"]
        fly_p = memory.zero_in_flight_grad_bytes(opt, count.trainable, prec)
        kept_p = memory.zero_kept_grad_bytes(parts[r["rank"]], prec)
        kept_m = r["after_backward"] + r["fp32_at_step"]
        bound = memory.engine_states(
            opt, count.trainable, world, prec, k, count.largest_layer
        ).grads
        for m, p in ((r["in_flight"], fly_p), (kept_m, kept_p)):
            worst_all = _worse(_ratio(m, p), worst_all)
        lines.append(
            f"| {opt} | {prec} | {r['rank']} | {_cell(r['in_flight'], fly_p)} | "
            f"{_cell(kept_m, kept_p)} | {(r['reducing'] or 0) / 1e6:.3f} MB | "
            f"{bound / 1e6:.3f} / {r['grads'] / 1e6:.3f} MB "
            f"{'>=' if bound >= r['grads'] else '< (NOT AN UPPER BOUND)'} |"
        )
        if bound < r["grads"]:
            worst_all = _worse(_ratio(r["grads"], bound), worst_all)
    lines.append("")
    lines.append(
        f"worst ratio over all cells: {worst_all:.3f} "
        f"({'within' if abs(worst_all - 1) <= 0.10 else 'OUTSIDE'} 10%)"
    )
    text = "\n".join(lines)
    print(text)
    if ns.markdown:
        Path(ns.markdown).write_text(text + "\n")
    return 0 if abs(worst_all - 1) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
