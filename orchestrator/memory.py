"""Memory planner: per-device bytes of model states and activations for every strategy.

    orch plan jobs/mnist_mlp.yaml                                  # the table under the plan
    orch plan jobs/mnist_mlp.yaml strategy=auto resources.gpus_per_worker=1 \
        resources.gpu_memory_gb=24 resources.workers=8             # auto picks and says why

The workload's model is built on the meta device (shapes only: no memory, no download) and its
parameters counted: Ψ in total, and the largest number any one module owns directly (what
ZeRO-3 gathers at once). Model states per device, N data-parallel workers:

    strategy             ZeRO paper (mixed precision, Adam)     what the engine allocates
    ddp                  16Ψ                                    16Ψ (fp32 weights under autocast)
    fsdp (FSDP2)         16Ψ/N                                  16Ψ/N (fp32 shards) + gather buffer
    ZeRO-1               4Ψ + 12Ψ/N                             4Ψ + 16Ψ/N (upper bound)
    ZeRO-2               2Ψ + 14Ψ/N                             2Ψ + 2·max(min(Ψ, bucket), min(Ψ,
                                                                Ψ/N + 2·largest)) + 16Ψ/N (ub)
    ZeRO-3               16Ψ/N                                  20Ψ/N + 4·largest layer
    + offload_optimizer  optimizer states (and ZeRO-1/2 grads) in host memory

DeepSpeed keeps an fp32 copy of its gradient partition (4Ψ/N) besides the 16-bit gradients,
which the paper leaves out; its estimators (`estimate_zero2_model_states_mem_needs_all_cold`,
the zero3 one) count it as 2Ψ+18Ψ/N and 18Ψ/N + 4·largest layer (the "DS est." column). The
"engine" column is what bench/zero_memory.py measured DeepSpeed 0.19 and torch allocating, per
rank; `strategy: auto` uses it: running out of GPU memory costs more than a conservative pick.
In fp32 the 16-bit copies are fp32 and there is no separate master copy: DDP 16Ψ, ZeRO-1
8Ψ + 8Ψ/N, ZeRO-2 4Ψ + 12Ψ/N, ZeRO-3 16Ψ/N (paper).

ZeRO-1/2 gradients differ by rank (zero_partitions): DeepSpeed flattens the weights into one
buffer padded to a multiple of 2N elements and gives each rank an equal slice; after reducing,
a rank keeps (whole) the 16-bit gradients of the parameters overlapping its slice and frees
the rest, in both stages and both precisions. So its gradients are the larger of: the end of
backward (ZeRO-1 all Ψ 16-bit gradients, ZeRO-2 a bucketful in flight) and the kept ones plus
the fp32 slice at the step (in fp32 that slice is a view, not a copy, when one parameter
covers it). engine_states(..., param_sizes=, rank=) gives one rank's figures, the max over
ranks without `rank`; without `param_sizes` (estimate(), strategy: auto) the table's figures,
an upper bound on every rank: all gradients kept (ZeRO-1), at most a slice plus the largest
layer on either edge (ZeRO-2). Not counted: the reduce bucket DeepSpeed allocates whole
(reduce_bucket_size, 5e8 elements) during backward beyond its filled part, and the moment in
the reduction when the filled bucket and the kept gradients coexist (bench/zero_memory.py
reports it).

Activations: a workload may define `activation_shape(args) -> {"batch", "seq", "hidden",
"layers", "heads"[, "vocab"]}` (transformers; Korthikanti et al. 2022, 34·s·b·h + 5·a·s²·b
bytes per layer in 16-bit) or `example_input(args, batch)`; otherwise the planner runs the
model's forward on meta tensors shaped from its first layer and sums the outputs of every
leaf module. A rough estimate, printed as such.

`strategy: auto` takes the first option, in order of communication per step, whose engine
figure plus activations fits `headroom` (80%) of `resources.gpu_memory_gb`:
ddp, ZeRO-1, ZeRO-2 (2Ψ each), fsdp, ZeRO-3 (3Ψ), then the offload variants (PCIe traffic
and CPU optimizer steps on top).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import FieldError, SpecError

GiB = 2**30
HEADROOM = 0.8
REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)
NCCL_START_ALIGNMENT = 2  # DeepSpeed ZeRO-1/2 pad their flat buffer to a multiple of 2 x N

# Options in the order `strategy: auto` tries them (least communication first).
OPTIONS = (
    "ddp",
    "zero1",
    "zero2",
    "fsdp",
    "zero3",
    "zero2_offload_opt",
    "zero3_offload_opt",
    "zero3_offload_all",
)
LABELS = {
    "ddp": "ddp",
    "fsdp": "fsdp",
    "zero1": "ZeRO-1",
    "zero2": "ZeRO-2",
    "zero3": "ZeRO-3",
    "zero2_offload_opt": "ZeRO-2 + offload opt",
    "zero3_offload_opt": "ZeRO-3 + offload opt",
    "zero3_offload_all": "ZeRO-3 + offload opt+param",
}
COMM = {
    "ddp": "2Ψ",
    "zero1": "2Ψ",
    "zero2": "2Ψ",
    "fsdp": "3Ψ",
    "zero3": "3Ψ",
    "zero2_offload_opt": "2Ψ+PCIe",
    "zero3_offload_opt": "3Ψ+PCIe",
    "zero3_offload_all": "3Ψ+PCIe",
}
# The spec that each option resolves to: (strategy, deepspeed stage, offload_opt, offload_param)
RESOLVES_TO = {
    "ddp": ("ddp", None, None, None),
    "fsdp": ("fsdp", None, None, None),
    "zero1": ("deepspeed", 1, "none", "none"),
    "zero2": ("deepspeed", 2, "none", "none"),
    "zero3": ("deepspeed", 3, "none", "none"),
    "zero2_offload_opt": ("deepspeed", 2, "cpu", "none"),
    "zero3_offload_opt": ("deepspeed", 3, "cpu", "none"),
    "zero3_offload_all": ("deepspeed", 3, "cpu", "cpu"),
}


@dataclass(frozen=True)
class ParamCount:
    total: int  # shared (tied) parameters once
    trainable: int
    largest_layer: int  # most parameters owned directly by one module (DeepSpeed's definition)
    # numel of each trainable parameter in model.parameters() order: the order DeepSpeed
    # flattens a single param group in (zero_partitions); empty where unknown
    sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class ZeroPartition:
    """One rank's slice of DeepSpeed ZeRO-1/2's flat 16-bit buffer (zero_partitions)."""

    rank: int
    start: int  # [start, end) in the padded flat buffer (elements)
    end: int
    params: tuple[int, ...]  # indices of the parameters overlapping it (params_in_partition)
    kept: int  # their elements: the 16-bit gradients the rank keeps after reducing
    padding: int  # elements of the slice past the last parameter (alignment padding)

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class States:
    """Bytes per device of model states, split the way bench/zero_memory.py measures them."""

    params: float
    grads: float
    optimizer: float
    buffer: float = 0.0  # transient gather buffer (ZeRO-3 / FSDP), not held between steps

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.buffer


def count_parameters(model) -> ParamCount:
    seen: dict[int, int] = {}
    trainable: dict[int, int] = {}
    for p in model.parameters():
        seen[id(p)] = p.numel()
        if p.requires_grad:
            trainable[id(p)] = p.numel()
    largest = 0
    for m in model.modules():
        largest = max(largest, sum(p.numel() for p in m.parameters(recurse=False)))
    return ParamCount(
        sum(seen.values()), sum(trainable.values()), largest, tuple(trainable.values())
    )


def workload_args(workload, train: dict[str, Any]):
    cls = getattr(workload, "Args", None)
    return cls.model_validate(train) if cls is not None else train


def build_on_meta(workload, args):
    """The workload's model with meta tensors (shapes only), or None if it has no build_model."""
    import torch

    build = getattr(workload, "build_model", None)
    if build is None:
        return None
    with torch.device("meta"):
        return build(args)


def optimizer_state_bytes(optimizer: str, momentum: float = 0.9) -> int:
    """Bytes of optimizer state per parameter in fp32: Adam(W) m and v; SGD its momentum."""
    if optimizer in ("adam", "adamw"):
        return 8
    return 4 if momentum > 0 else 0


def zero_partitions(param_sizes, n: int) -> list[ZeroPartition]:
    """DeepSpeed ZeRO-1/2's flat layout of one param group over N ranks, rank by rank.

    DeepSpeed 0.19 (stage_1_and_2.py) flattens the group's parameters in order into one
    16-bit buffer, padded at the end to a multiple of nccl_start_alignment_factor (2) x N
    elements, and cuts it into N equal slices (get_data_parallel_partitions). A rank's
    params_in_partition are those that start in its slice or straddle its start
    (get_partition_info); with contiguous_gradients (the default) those are the gradients it
    copies into its grads_in_partition buffer and keeps after the reduction, whole, while the
    gradients of parameters wholly outside its slice are freed (ZeRO-2 right after their
    bucket is reduced, ZeRO-1 at the end of backward). Defaults assumed: one param group,
    round_robin_gradients and parameter_alignment off.
    """
    sizes = [int(x) for x in param_sizes]
    n = max(1, int(n))
    total = sum(sizes)
    align = NCCL_START_ALIGNMENT * n
    size = -(-total // align) * align // n
    parts = []
    for r in range(n):
        start, end = r * size, (r + 1) * size
        idx, cur = [], 0
        for i, numel in enumerate(sizes):
            if start <= cur < end or cur < start < cur + numel:
                idx.append(i)
            cur += numel
        covered = max(0, min(end, total) - start)
        parts.append(
            ZeroPartition(r, start, end, tuple(idx), sum(sizes[i] for i in idx), size - covered)
        )
    return parts


def zero_kept_grad_bytes(part: ZeroPartition, precision: str) -> float:
    """Gradient bytes a ZeRO-1/2 rank holds at its optimizer step: the 16-bit buffer of the
    gradients it kept (its params_in_partition, whole, plus a zero tensor for the padding in
    its slice) and the fp32 copy of its slice that the optimizer steps on.

    The fp32 copy is `flatten(averaged_gradients).to(fp32)`: in bf16/fp16 always a new
    4-bytes-per-element tensor; in fp32 a view of the 16-bit (here fp32) buffer when that
    list holds a single tensor (one parameter covering the whole slice), since torch's
    flatten of one tensor and `.to` of the same dtype copy nothing.
    """
    p16 = 2 if precision in ("bf16", "fp16") else 4
    held16 = p16 * (part.kept + part.padding)
    pieces = len(part.params) + (1 if part.padding else 0)
    fp32 = 0 if precision == "fp32" and pieces == 1 else 4 * part.size
    return float(held16 + fp32)


def zero_in_flight_grad_bytes(option: str, psi: float, precision: str) -> float:
    """16-bit gradient bytes a ZeRO-1/2 rank holds at the end of backward, before reducing:
    ZeRO-1 all of them (it reduces at the accumulation boundary, in allreduce_gradients);
    ZeRO-2 a bucketful in flight (it reduces during backward, reduce_bucket_size elements at a
    time). The same on every rank."""
    p16 = 2 if precision in ("bf16", "fp16") else 4
    return float(p16 * (psi if option == "zero1" else min(psi, REDUCE_BUCKET)))


def engine_states(
    option: str,
    psi: float,
    n: int,
    precision: str,
    opt_bytes: int = 8,
    largest_layer: int = 0,
    *,
    param_sizes=None,
    rank: int | None = None,
) -> States:
    """What torch (ddp, fsdp) or DeepSpeed (ZeRO) allocate per device for model states.

    ZeRO-1/2 are not the same on every rank: after reducing, a rank keeps the 16-bit gradients
    of the parameters that overlap its slice of the flat buffer (zero_partitions), so the
    layout depends on the parameter sizes. With `param_sizes` (trainable numels in
    model.parameters() order, ParamCount.sizes) and `rank`, the figures are that rank's; with
    `param_sizes` alone, the worst rank's. Without them (what estimate(), and so
    `strategy: auto`, uses) the figures are an upper bound on every rank: all Ψ 16-bit
    gradients kept (ZeRO-1), or at most a slice plus 2 x the largest layer on either edge
    (ZeRO-2). The other options are the same on every rank; `param_sizes` and `rank` are
    ignored there.
    """
    mixed = precision in ("bf16", "fp16")
    if option == "ddp":
        # autocast keeps fp32 weights and gradients; low-precision copies are transient.
        return States(4 * psi, 4 * psi, opt_bytes * psi)
    if option == "fsdp":
        # FSDP2 shards fp32 weights, gradients (reduce_dtype fp32) and optimizer state; it
        # gathers one unit's weights (in the compute dtype) at a time, plus one prefetched.
        low = 2 if mixed else 4
        return States(4 * psi / n, 4 * psi / n, opt_bytes * psi / n, 2 * low * largest_layer)
    p16 = 2 if mixed else 4  # DeepSpeed's module weights: bf16/fp16 or fp32
    master = 4  # DeepSpeed's fp32 partition the optimizer steps (a copy even in fp32)
    if option in ("zero1", "zero2"):
        return _zero12_states(
            option, psi, n, precision, opt_bytes, largest_layer, param_sizes, rank
        )
    opt = (master + opt_bytes) * psi / n
    gpart = 4 * psi / n  # the fp32 gradient partition DeepSpeed keeps for the optimizer
    if option == "zero3":
        return States(p16 * psi / n, p16 * psi / n + gpart, opt, 4 * largest_layer)
    if option == "zero2_offload_opt":
        return States(p16 * psi, 0.0, 0.0)
    if option == "zero3_offload_opt":
        return States(p16 * psi / n, 0.0, 0.0, 4 * largest_layer)
    if option == "zero3_offload_all":
        return States(0.0, 0.0, 0.0, 4 * largest_layer)
    raise ValueError(f"unknown option {option!r}")


def _zero12_states(
    option, psi, n, precision, opt_bytes, largest_layer, param_sizes, rank
) -> States:
    p16 = 2 if precision in ("bf16", "fp16") else 4
    n = max(1, int(n))
    if param_sizes is not None:
        parts = zero_partitions(param_sizes, n)
        psi = sum(int(x) for x in param_sizes)
        padded, size = parts[-1].end, parts[0].size
    else:
        if rank is not None:
            raise ValueError("a rank's figures need param_sizes (ParamCount.sizes)")
        align = NCCL_START_ALIGNMENT * n
        padded = -(-int(psi) // align) * align
        size = padded // n
    # The 16-bit weights (the padded flat buffer; module params are views into it); the fp32
    # slice the optimizer steps and its state.
    params = p16 * padded
    opt = (4 + opt_bytes) * size
    in_flight = zero_in_flight_grad_bytes(option, psi, precision)
    if param_sizes is not None:
        kept = [zero_kept_grad_bytes(p, precision) for p in parts]
        after = kept[rank] if rank is not None else max(kept)
    elif option == "zero1":
        after = p16 * padded + 4 * size
    else:
        # A rank keeps its slice plus the parameters straddling its two edges, each at most
        # one module's worth (largest_layer); unknown (0): all of them.
        edge = size + 2 * largest_layer if largest_layer else padded
        after = p16 * max(min(padded, REDUCE_BUCKET), min(padded, edge)) + 4 * size
    return States(params, max(in_flight, after), opt)


def paper_states(option: str, psi: float, n: int, precision: str, opt_bytes: int = 8) -> float:
    """The ZeRO paper's per-device model states: 16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N, 16Ψ/N (mixed, Adam);
    K = 12 there is fp32 master weights + Adam's m and v. In fp32: no master, 4-byte copies."""
    mixed = precision in ("bf16", "fp16")
    p = g = 2 if mixed else 4
    k = opt_bytes + (4 if mixed else 0)
    base = option.split("_", 1)[0]
    offload = "offload" in option
    if base == "ddp":
        return (p + g + k) * psi
    if base == "zero1":
        return (p + g) * psi + k * psi / n
    if base == "zero2":
        return p * psi if offload else p * psi + (g + k) * psi / n
    if base in ("zero3", "fsdp"):
        if option == "zero3_offload_all":
            return 0.0
        return p * psi / n if offload else (p + g + k) * psi / n
    raise ValueError(f"unknown option {option!r}")


def deepspeed_estimate(option: str, psi: int, n: int, largest_layer: int) -> float | None:
    """DeepSpeed 0.19's own per-GPU formula (estimate_zero{2,3}_model_states_mem_needs, one
    node, zero_init=1): mixed-precision Adam. None where DeepSpeed has no estimator."""
    if option == "zero2":
        return 2 * psi + int(18 * psi / n)
    if option == "zero2_offload_opt":
        return 2 * psi
    if option == "zero3":
        return 4 * largest_layer + int(18 * psi / n)
    if option == "zero3_offload_opt":
        return 4 * largest_layer + int(2 * psi / n)
    if option == "zero3_offload_all":
        return 4 * largest_layer
    return None


# --- activations ------------------------------------------------------------------------------


def transformer_activation_bytes(shape: dict[str, Any], precision: str) -> float:
    """Korthikanti et al. 2022 (no recomputation): per layer s·b·h·(34 + 5·a·s/h) bytes in
    16-bit; plus fp32 logits and their gradient (s·b·V·8)."""
    b, s, h = int(shape["batch"]), int(shape["seq"]), int(shape["hidden"])
    layers, heads = int(shape["layers"]), int(shape.get("heads", 1))
    per_layer = s * b * h * (34 + 5 * heads * s / h)
    if precision == "fp32":
        per_layer *= 2
    logits = s * b * int(shape.get("vocab", 0)) * 8
    return layers * per_layer + logits


def _first_leaf(model):
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)):
            return m
    return None


def meta_activation_bytes(workload, args, model, batch: int, precision: str) -> float | None:
    """Sum of every leaf module's output on a meta forward pass (what autograd mostly keeps)."""
    import torch
    import torch.nn as nn

    make = getattr(workload, "example_input", None)
    with torch.device("meta"):
        if make is not None:
            x = make(args, batch)
        else:
            first = _first_leaf(model)
            if isinstance(first, nn.Linear):
                x = torch.empty(batch, first.in_features)
            elif isinstance(first, nn.Embedding):
                x = torch.zeros(batch, int(getattr(args, "seq_len", 128)), dtype=torch.long)
            else:
                return None
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        for t in out if isinstance(out, tuple | list) else (out,):
            if torch.is_tensor(t):
                total += t.numel()

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if not any(True for _ in m.children())
    ]
    try:
        with torch.no_grad():
            model(*x) if isinstance(x, tuple) else model(x)
    except Exception:  # noqa: BLE001 - an estimate; a model that needs more than a tensor
        return None
    finally:
        for h in handles:
            h.remove()
    return float(total * (4 if precision == "fp32" else 2))


def activation_bytes(workload, args, model, precision: str) -> tuple[float | None, str]:
    batch = int(getattr(args, "batch_size", 1) or 1)
    shape_fn = getattr(workload, "activation_shape", None)
    if shape_fn is not None:
        shape = shape_fn(args)
        return transformer_activation_bytes(shape, precision), (
            f"transformer formula, batch {shape['batch']} x seq {shape['seq']}"
        )
    got = meta_activation_bytes(workload, args, model, batch, precision)
    if got is None:
        return None, "unknown (define activation_shape or example_input in the workload)"
    return got, f"leaf outputs of a meta forward, batch {batch}"


# --- the plan ---------------------------------------------------------------------------------


def estimate(
    count: ParamCount,
    workers: int,
    precision: str,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    activations: float | None = None,
) -> dict[str, dict[str, float]]:
    """Per-device bytes for every option: engine breakdown, paper and DeepSpeed figures."""
    psi, n, L = count.trainable, max(1, workers), count.largest_layer
    k = optimizer_state_bytes(optimizer, momentum)
    rows: dict[str, dict[str, float]] = {}
    for option in OPTIONS:
        st = engine_states(option, psi, n, precision, k, L)
        ds = deepspeed_estimate(option, psi, n, L) if precision != "fp32" and k == 8 else None
        rows[option] = {
            "params": st.params,
            "grads": st.grads,
            "optimizer": st.optimizer,
            "buffer": st.buffer,
            "model_states": st.total,
            "paper": paper_states(option, psi, n, precision, k),
            "deepspeed_estimator": ds if ds is not None else float("nan"),
            "activations": activations if activations is not None else float("nan"),
            "total": st.total + (activations or 0.0),
        }
    return rows


def _gib(x: float) -> str:
    return "-" if x != x else f"{x / GiB:.2f}"  # NaN -> "-"


def render_table(
    rows: dict[str, dict[str, float]],
    count: ParamCount,
    workers: int,
    precision: str,
    optimizer: str,
    gpu_gb: float | None,
    chosen: str | None,
    act_how: str,
) -> str:
    head = (
        f"memory per device (GiB): {count.trainable / 1e6:,.1f}M trainable parameters "
        f"(largest layer {count.largest_layer / 1e6:,.1f}M), {workers} data-parallel "
        f"worker(s), {precision}, {optimizer}"
    )
    cols = [
        "option",
        "comm",
        "params",
        "grads",
        "optim",
        "buffer",
        "states",
        "paper",
        "DS est.",
        "activ.",
        "total",
    ]
    if gpu_gb:
        cols.append(f"fits {HEADROOM:.0%} of {gpu_gb:g}")
    lines = [head, f"activations: {act_how}"]
    table = [cols]
    for option, r in rows.items():
        row = [LABELS[option], COMM[option]] + [
            _gib(r[k])
            for k in (
                "params",
                "grads",
                "optimizer",
                "buffer",
                "model_states",
                "paper",
                "deepspeed_estimator",
                "activations",
                "total",
            )
        ]
        if gpu_gb:
            row.append("yes" if r["total"] <= HEADROOM * gpu_gb * GiB else "no")
        if option == chosen:
            row[0] += " <"
        table.append(row)
    widths = [max(len(str(r[i])) for r in table) for i in range(len(cols))]
    for r in table:
        lines.append(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    lines.append(
        "states = params + grads + optim + buffer, as the engine allocates them "
        "(strategy: auto uses these); paper = the ZeRO paper's formula; DS est. = "
        "DeepSpeed's estimator (mixed-precision Adam only). See docs/strategies.md."
    )
    return "\n".join(lines)


def choose(rows: dict[str, dict[str, float]], gpu_gb: float) -> str | None:
    budget = HEADROOM * gpu_gb * GiB
    for option in OPTIONS:
        if rows[option]["total"] <= budget:
            return option
    return None


def plan_memory(spec, workload) -> tuple[dict[str, Any] | None, str, str]:
    """(memory summary or None, resolved strategy, why) for plan(). Resolves `strategy: auto`
    (setting spec.deepspeed's stage and offload when it picks a ZeRO option)."""
    strategy = spec.strategy
    res = spec.resources
    try:
        args = workload_args(workload, spec.train)
        model = build_on_meta(workload, args)
    except Exception as exc:  # noqa: BLE001 - the planner is advisory unless auto needs it
        model, why_none = None, f"model not built on meta ({type(exc).__name__}: {exc})"
    else:
        why_none = "the workload has no build_model()"
    if model is None:
        if strategy == "auto":
            return None, "ddp", f"strategy auto -> ddp: no memory estimate ({why_none})"
        return None, strategy, ""

    count = count_parameters(model)
    optimizer = str(getattr(args, "optimizer", "adamw"))
    momentum = float(getattr(args, "momentum", 0.9))
    act, act_how = activation_bytes(workload, args, model, spec.precision)
    n = res.workers
    rows = estimate(count, n, spec.precision, optimizer, momentum, act)
    gpu_gb = res.gpu_memory_gb if res.gpus_per_worker > 0 else None

    chosen: str | None = None
    why = ""
    if strategy == "auto":
        if res.gpus_per_worker <= 0:
            chosen, why = (
                "ddp",
                (
                    "strategy auto -> ddp: CPU workers (no GPU memory to fit); "
                    "ddp has the least communication"
                ),
            )
        elif not res.gpu_memory_gb:
            chosen, why = (
                "ddp",
                (
                    "strategy auto -> ddp: resources.gpu_memory_gb is not set, so "
                    "fit cannot be checked; ddp has the least communication"
                ),
            )
        else:
            chosen = choose(rows, res.gpu_memory_gb)
            if chosen is None:
                smallest = min(rows, key=lambda o: rows[o]["total"])
                raise SpecError(
                    [
                        FieldError(
                            "strategy",
                            f"auto: no strategy fits {HEADROOM:.0%} of resources.gpu_memory_gb="
                            f"{res.gpu_memory_gb:g} GiB; the smallest, {LABELS[smallest]}, needs "
                            f"{rows[smallest]['total'] / GiB:.2f} GiB per GPU. Add workers, lower "
                            "train.batch_size, or use bigger GPUs",
                            "auto",
                        )
                    ]
                )
            skipped = [
                f"{LABELS[o]} {rows[o]['total'] / GiB:.1f}"
                for o in OPTIONS[: OPTIONS.index(chosen)]
            ]
            why = (
                f"strategy auto -> {LABELS[chosen]}: {rows[chosen]['total'] / GiB:.2f} GiB "
                f"per GPU fits {HEADROOM:.0%} of {res.gpu_memory_gb:g} GiB with the least "
                f"communication ({COMM[chosen]} per step)"
            )
            if skipped:
                why += f"; needing more: {', '.join(skipped)} GiB"
        strategy, stage, off_opt, off_par = RESOLVES_TO[chosen]
        if strategy == "deepspeed":
            spec.deepspeed.stage = stage
            spec.deepspeed.offload_optimizer = off_opt
            spec.deepspeed.offload_param = off_par
    else:
        chosen = _option_of(spec)
        if gpu_gb and chosen and rows[chosen]["total"] > HEADROOM * gpu_gb * GiB:
            why = (
                f"warning: {LABELS[chosen]} needs about {rows[chosen]['total'] / GiB:.2f} GiB "
                f"per GPU, over {HEADROOM:.0%} of resources.gpu_memory_gb={gpu_gb:g}; "
                f"strategy: auto would pick {LABELS.get(choose(rows, gpu_gb) or '', 'none')}"
            )

    table = render_table(rows, count, n, spec.precision, optimizer, gpu_gb, chosen, act_how)
    memory = {
        "parameters": count.total,
        "trainable_parameters": count.trainable,
        "largest_layer_parameters": count.largest_layer,
        "workers": n,
        "activations_gib": None if act is None else round(act / GiB, 4),
        "option": LABELS.get(chosen or "", None),
        "per_device_gib": {LABELS[o]: round(r["total"] / GiB, 4) for o, r in rows.items()},
        "table": table,
    }
    return memory, strategy, why


def _option_of(spec) -> str | None:
    if spec.strategy in ("ddp", "fsdp"):
        return spec.strategy
    if spec.strategy != "deepspeed":
        return None
    ds = spec.deepspeed
    stage = ds.stage if ds.stage is not None else 2
    if stage == 0:
        return "ddp"
    off_opt = ds.offload_optimizer not in (None, "none")
    off_par = ds.offload_param not in (None, "none")
    if stage == 3:
        return "zero3_offload_all" if off_par else ("zero3_offload_opt" if off_opt else "zero3")
    if stage == 2 and off_opt:
        return "zero2_offload_opt"
    return f"zero{stage}" if not off_opt else "zero2_offload_opt"


# --- measuring (bench/zero_memory.py, tests) --------------------------------------------------


def _storage_key(t) -> tuple[int, int]:
    s = t.untyped_storage()
    return (s.data_ptr(), s.nbytes())


def held_bytes(sess, grads_seen: dict | None = None) -> dict[str, float]:
    """Bytes this rank holds of parameters, gradients and optimizer states, after a step.

    Each distinct storage is counted once. DeepSpeed: params are the module's weights (ZeRO-3:
    their partitions, ds_tensor); optimizer = the fp32 partition it steps plus the torch
    optimizer's state; grads = the gradient partitions (16-bit and fp32). torch: param.grad,
    the local shard under FSDP2.

    `grads_seen`, shared between calls at different moments (after backward, at the step),
    counts a gradient storage only at the first call that sees it: DeepSpeed's fp32 gradient
    partition can be a view of the 16-bit one (zero_kept_grad_bytes). It keeps the storages
    it has seen alive, so that no later allocation can reuse an address and be skipped.
    """
    import torch

    seen: set[tuple[int, int]] = set()

    def add(tensors, shared: dict | None = None) -> float:
        total = 0
        for t in tensors:
            if t is None or not torch.is_tensor(t):
                continue
            if hasattr(t, "to_local"):
                t = t.to_local()
            if t.numel() == 0:
                continue
            key = _storage_key(t)
            if key in seen or (shared is not None and key in shared):
                continue
            seen.add(key)
            if shared is not None:
                shared[key] = t.untyped_storage()
            total += t.untyped_storage().nbytes()
        return float(total)

    def opt_state(opt) -> list:
        out = []
        for st in getattr(opt, "state", {}).values():
            out.extend(v for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
        return out

    if sess.engine is None:
        params = list(sess.model.parameters())
        return {
            "params": add(params),
            "grads": add((p.grad for p in params), grads_seen),
            "optimizer": add(opt_state(sess.optimizer)),
        }

    zopt = sess.engine.optimizer
    module_params = list(sess.engine.module.parameters())
    if hasattr(module_params[0], "ds_tensor"):  # ZeRO-3: this rank's partitions
        p_bytes = add(p.ds_tensor for p in module_params)
    else:
        p_bytes = add(getattr(zopt, "bit16_groups_flat", None) or []) + add(module_params)
    fp32 = (
        getattr(zopt, "single_partition_of_fp32_groups", None)
        or getattr(zopt, "fp32_partitioned_groups_flat", None)
        or getattr(zopt, "fp32_groups_flat_partition", None)
        or []
    )
    inner = getattr(zopt, "optimizer", zopt)
    o_bytes = add(fp32) + add(opt_state(inner))
    fp32_grads = add((t.grad for t in fp32 if torch.is_tensor(t)), grads_seen)
    grads: list = [p.grad for p in module_params]
    for name in (
        "averaged_gradients",
        "grad_partitions_flat_buffer",
        "_DeepSpeedZeroOptimizer_Stage3__param_id_to_grad_partition",
    ):
        obj = getattr(zopt, name, None)
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else [obj]
        for v in items:
            grads += v if isinstance(v, list) else [v]
    g16 = add(grads, grads_seen)
    return {
        "params": p_bytes,
        "grads": g16 + fp32_grads,
        "grads_fp32": fp32_grads,
        "optimizer": o_bytes,
    }


def in_flight_grad_bytes(sess) -> float:
    """Gradient bytes a DeepSpeed ZeRO-1/2 rank holds at the end of backward, before the
    reduction (call it on entry to engine.allreduce_gradients): gradients in storage of their
    own (ZeRO-1: all of them), the filled part of the IPG reduce buckets (ZeRO-2's gradients
    in flight; DeepSpeed allocates reduce_bucket_size elements for each bucket, of which only
    what is filled is counted) and the buffer of the gradients the rank keeps, if it exists
    yet. Each storage once."""
    import torch

    zopt = sess.engine.optimizer
    seen: set[tuple[int, int]] = set()
    total = 0
    for bucket in (getattr(zopt, "ipg_buckets", None) or {}).values():
        buffers = [b for b in getattr(bucket, "buffer", None) or [] if torch.is_tensor(b)]
        seen.update(_storage_key(b) for b in buffers)
        if buffers:
            total += int(bucket.elements) * buffers[0].element_size()
    tensors = [p.grad for p in sess.engine.module.parameters()]
    tensors.append(getattr(zopt, "grads_in_partition", None))
    for t in tensors:
        if t is None or not torch.is_tensor(t) or t.numel() == 0:
            continue
        key = _storage_key(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return float(total)


def capture_stdout(fn, *args, **kwargs) -> str:
    """Run fn and return what it printed (DeepSpeed's estimators print their tables)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args, **kwargs)
    return buf.getvalue()
