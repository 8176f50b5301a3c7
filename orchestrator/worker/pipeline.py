"""Pipeline parallel: a model's layers cut into stages, one stage per worker, with PyTorch's own
`torch.distributed.pipelining` (PipelineStage, ScheduleGPipe, Schedule1F1B,
ScheduleInterleaved1F1B) over the process group Ray Train set up (gloo on CPU).

    orch run jobs/mnist_mlp.yaml strategy=pipeline pipeline.stages=2 pipeline.microbatches=4
    orch run jobs/mnist_mlp.yaml strategy=pipeline resources.workers=4   # 2 stages x 2 replicas
    orch plan jobs/mnist_mlp.yaml strategy=pipeline pipeline.stages=2    # stages and the bubble

Layout: W workers = S stages x D = W/S data-parallel replicas. Rank r is stage r % S of
replica r // S; a replica's S ranks form its pipeline group, and each stage's D ranks its
data-parallel group, whose gradients are averaged after every step (one flat all-reduce).
`interleaved` gives each rank 2 model chunks (chunk c lives on stage c % S), so the model is cut
into 2S parts.

Where the model is cut: a workload gives its model as a sequence of named blocks, either by
building an `nn.Sequential` (its children are the blocks) or with `pipeline_blocks(model)` ->
[(name, module), ...] whose composition is the model's forward. Stages start at block
boundaries chosen to balance the parameter count, or where `pipeline.split_points` (block
names) say. A workload that cannot be cut says why in `PIPELINE_UNSUPPORTED`.

The workload's loop is the same as for every strategy: `sess.train_step(model, x, y, loss_fn)`
runs the schedule (forward and backward over the microbatches, the loss on the last stage,
sent back to every rank of the replica), and `model(x)` in eval mode is a plain forward through
the stages whose output every rank of the replica receives (evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEDULES = ("gpipe", "1f1b", "interleaved")


class SplitError(ValueError):
    """The model cannot be cut into the stages asked for; the message says why."""


# -- layout and the bubble ------------------------------------------------------------------


def chunks_per_rank(schedule: str) -> int:
    return 2 if schedule == "interleaved" else 1


def bubble_fraction(stages: int, microbatches: int, schedule: str = "gpipe") -> float:
    """The idle share of a step: (S-1)/(M+S-1); interleaved with V chunks per rank shrinks the
    fill and drain to (S-1)/(V*M+S-1)."""
    v = chunks_per_rank(schedule)
    return (stages - 1) / (v * microbatches + stages - 1)


@dataclass(frozen=True)
class Layout:
    """W = stages x replicas ranks; rank r is stage r % stages of replica r // stages."""

    stages: int
    replicas: int

    def stage_of(self, rank: int) -> int:
        return rank % self.stages

    def replica_of(self, rank: int) -> int:
        return rank // self.stages

    def replica_ranks(self, replica: int) -> list[int]:
        return [replica * self.stages + s for s in range(self.stages)]

    def stage_ranks(self, stage: int) -> list[int]:
        return [r * self.stages + stage for r in range(self.replicas)]


# -- cutting the model ----------------------------------------------------------------------


def blocks_of(model, workload=None) -> list[tuple[str, Any]]:
    """The model as an ordered list of (name, module) blocks; SplitError if it is not one."""
    import torch.nn as nn

    reason = getattr(workload, "PIPELINE_UNSUPPORTED", None)
    if reason:
        raise SplitError(reason)
    fn = getattr(workload, "pipeline_blocks", None)
    if callable(fn):
        try:
            return [(str(n), m) for n, m in fn(model)]
        except (ValueError, TypeError) as exc:  # the workload's own reason
            raise SplitError(str(exc)) from None
    if isinstance(model, nn.Sequential):
        return list(model.named_children())
    name = getattr(workload, "__name__", "the workload")
    raise SplitError(
        f"{name} declares no split points: its model ({type(model).__name__}) is not an "
        "nn.Sequential and it has no pipeline_blocks(model) giving the model as a sequence of "
        "named blocks (docs/strategies.md, Pipeline)"
    )


def _param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def split(
    sizes: list[int], names: list[str], parts: int, split_points: list[str] | None = None
) -> list[tuple[int, int]]:
    """Cut blocks with parameter counts `sizes` into `parts` contiguous [start, end) ranges,
    each holding parameters: at `split_points` (names of the blocks that start parts 2..n),
    else so that the largest part is as small as it can be. SplitError when it cannot."""
    n = len(sizes)
    if split_points:
        if len(split_points) != parts - 1:
            raise SplitError(
                f"{len(split_points)} block(s) named; {parts} parts need "
                f"{parts - 1} (blocks: {', '.join(names)})"
            )
        unknown = [p for p in split_points if p not in names]
        if unknown:
            raise SplitError(f"no block named {', '.join(unknown)} (blocks: {', '.join(names)})")
        starts = [names.index(p) for p in split_points]
        if starts != sorted(set(starts)) or starts[0] == 0:
            raise SplitError(
                "expected blocks named in model order, after the first "
                f"(blocks: {', '.join(names)})"
            )
        bounds = [0, *starts, n]
        cuts = list(zip(bounds[:-1], bounds[1:], strict=True))
        empty = [f"{names[a]}..{names[b - 1]}" for a, b in cuts if sum(sizes[a:b]) == 0]
        if empty:
            raise SplitError(f"these split points leave part(s) without parameters: {empty}")
        return cuts
    holding = sum(1 for s in sizes if s > 0)
    if holding < parts:
        raise SplitError(
            f"the model cannot be cut into {parts} parts that each hold parameters: only "
            f"{holding} of its {n} blocks do ({', '.join(names)})"
        )
    # best[k][i]: the smallest possible largest part cutting blocks[:i] into k parts.
    inf = float("inf")
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    back = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(1, n + 1):
            for j in range(k - 1, i):
                part = prefix[i] - prefix[j]
                if part == 0 or best[k - 1][j] == inf:
                    continue
                worst = max(best[k - 1][j], part)
                if worst <= best[k][i]:  # ties: the later cut (blocks without
                    # parameters, e.g. an activation, stay with the layer before them)
                    best[k][i], back[k][i] = worst, j
    cuts, i = [], n
    for k in range(parts, 0, -1):
        j = back[k][i]
        cuts.append((j, i))
        i = j
    return cuts[::-1]


def cut(model, workload, parts: int, split_points: list[str] | None = None):
    """(chunks, names): `parts` nn.Sequential chunks of the model's blocks and each chunk's
    block names."""
    from collections import OrderedDict

    import torch.nn as nn

    blocks = blocks_of(model, workload)
    names = [n for n, _ in blocks]
    cuts = split([_param_count(m) for _, m in blocks], names, parts, split_points)
    chunks = [nn.Sequential(OrderedDict(blocks[a:b])) for a, b in cuts]
    return chunks, [names[a:b] for a, b in cuts]


def spec_errors(workload, train: dict[str, Any], pipeline: dict[str, Any]) -> list:
    """Validation: the workload's model (built on the meta device) can be cut as asked."""
    from orchestrator import memory
    from orchestrator.errors import FieldError

    reason = getattr(workload, "PIPELINE_UNSUPPORTED", None)
    if reason:
        return [FieldError("strategy", f"{workload.__name__} cannot run as a pipeline: {reason}")]
    args = memory.workload_args(workload, train)
    try:
        model = memory.build_on_meta(workload, args)
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return [FieldError("strategy", f"pipeline: the model was not built ({exc})", "pipeline")]
    if model is None:
        return [
            FieldError(
                "strategy",
                f"{workload.__name__} has no build_model(args), so it declares no split points "
                "for a pipeline",
                "pipeline",
            )
        ]
    try:
        blocks_of(model, workload)
    except SplitError as exc:
        return [FieldError("strategy", str(exc), "pipeline")]
    stages, schedule = int(pipeline.get("stages", 2)), str(pipeline.get("schedule", "1f1b"))
    parts = stages * chunks_per_rank(schedule)
    try:
        cut(model, workload, parts, pipeline.get("split_points"))
    except SplitError as exc:
        field = "pipeline.split_points" if pipeline.get("split_points") else "pipeline.stages"
        why = str(exc)
        if parts != stages:
            why = f"schedule {schedule} cuts {stages} stages x 2 chunks = {parts} parts, and {why}"
        return [FieldError(field, why, str(pipeline.get("split_points") or stages))]
    return []


# -- the plan: stages, parameters, memory, bubble --------------------------------------------


def plan_stages(
    workload,
    train: dict[str, Any],
    stages: int,
    microbatches: int,
    schedule: str,
    split_points: list[str] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """Each stage's blocks, parameters and memory (fp32 weights, gradients and optimizer
    states, plus the activations of the microbatches it holds at once), and the bubble."""
    from orchestrator import memory

    args = memory.workload_args(workload, train)
    model = memory.build_on_meta(workload, args)
    v = chunks_per_rank(schedule)
    chunks, names = cut(model, workload, stages * v, split_points)
    k = memory.optimizer_state_bytes(
        str(getattr(args, "optimizer", "adamw")), float(getattr(args, "momentum", 0.9))
    )
    batch = int(getattr(args, "batch_size", 1) or 1)
    micro = max(1, batch // microbatches)
    act_per_chunk = _meta_activations(workload, args, chunks, micro)
    rows = []
    for s in range(stages):
        mine = [c for c in range(stages * v) if c % stages == s]
        params = sum(_param_count(chunks[c]) for c in mine)
        # Microbatches whose activations a stage holds at once: GPipe all M before the first
        # backward; 1F1B at most S - s (stage s warms up with S - s forwards).
        in_flight = microbatches if schedule == "gpipe" else min(microbatches, stages - s) * v
        act = None
        if act_per_chunk is not None:
            act = sum(act_per_chunk[c] for c in mine) / max(1, len(mine)) * in_flight
        states = params * (4 + 4 + k)
        rows.append(
            {
                "stage": s,
                "blocks": [n for c in mine for n in names[c]],
                "parameters": params,
                "states_gib": round(states / memory.GiB, 6),
                "activations_gib": None if act is None else round(act / memory.GiB, 6),
                "microbatches_in_flight": in_flight,
                "total_gib": round((states + (act or 0.0)) / memory.GiB, 6),
            }
        )
    return {
        "stages": stages,
        "replicas": replicas,
        "microbatches": microbatches,
        "microbatch_size": micro,
        "schedule": schedule,
        "chunks_per_rank": v,
        "bubble_fraction": round(bubble_fraction(stages, microbatches, schedule), 4),
        "per_stage": rows,
    }


def _meta_activations(workload, args, chunks, micro: int) -> list[float] | None:
    """Bytes of each chunk's leaf outputs for one microbatch (fp32), from a meta forward."""
    import torch
    import torch.nn as nn

    make = getattr(workload, "example_input", None)
    with torch.device("meta"):
        if make is not None:
            x = make(args, micro)
        else:
            first = next((m for m in chunks[0].modules() if isinstance(m, nn.Linear)), None)
            if first is None:
                return None
            x = torch.empty(micro, first.in_features)
    out = []
    try:
        with torch.no_grad():
            for chunk in chunks:
                total = 0

                def hook(_m, _i, y):
                    nonlocal total
                    if torch.is_tensor(y):
                        total += y.numel()

                handles = [
                    m.register_forward_hook(hook)
                    for m in chunk.modules()
                    if not any(True for _ in m.children())
                ]
                try:
                    x = chunk(*x) if isinstance(x, tuple) else chunk(x)
                finally:
                    for h in handles:
                        h.remove()
                out.append(float(total * 4))
    except Exception:  # noqa: BLE001 - an estimate
        return None
    return out


def render_table(info: dict[str, Any]) -> str:
    """The plan's pipeline table (`orch plan`)."""
    head = ("stage", "blocks", "parameters", "states GiB", "activations GiB", "total GiB")
    rows = [head]
    for r in info["per_stage"]:
        act = r["activations_gib"]
        rows.append(
            (
                str(r["stage"]),
                ",".join(r["blocks"]),
                f"{r['parameters']:,}",
                f"{r['states_gib']:.4f}",
                "-" if act is None else f"{act:.4f} (x{r['microbatches_in_flight']} mb)",
                f"{r['total_gib']:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        f"pipeline: {info['stages']} stages x {info['replicas']} data-parallel replica(s), "
        f"{info['schedule']}, {info['microbatches']} microbatches of {info['microbatch_size']}"
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    s, m = info["stages"], info["microbatches"]
    v = info["chunks_per_rank"]
    formula = f"(S-1)/(M+S-1) = {s - 1}/{m + s - 1}"
    if v > 1:
        formula = f"(S-1)/(V*M+S-1) = {s - 1}/{v * m + s - 1}, V={v} chunks per rank"
    lines.append(f"bubble: {info['bubble_fraction']:.1%} of each step idle, {formula}")
    return "\n".join(lines)


# -- the runtime: stages, schedules, gradients ----------------------------------------------


def _make_module_class():
    import torch
    import torch.distributed as dist
    import torch.nn as nn

    class PipelineModel(nn.Module):
        """This rank's chunks of the model, and the schedule that trains them.

        `train_step(x, y, loss_fn)`: one step of the schedule over `microbatches`
        microbatches (gradients averaged across the stage's data-parallel group); returns the
        replica's mean loss on every rank. `model(x)` (eval, no grad): a forward through the
        replica's stages, the output returned on every rank of the replica."""

        def __init__(self, chunks, chunk_ids, n_chunks, layout, rank, schedule, microbatches):
            super().__init__()
            self.chunks = nn.ModuleList(chunks)
            self.chunk_ids = list(chunk_ids)
            self.n_chunks = n_chunks
            self.layout = layout
            self.rank = rank
            self.stage = layout.stage_of(rank)
            self.schedule_name = schedule
            self.microbatches = microbatches
            self._schedules: dict[tuple, Any] = {}
            replica = layout.replica_of(rank)
            # Every rank creates every group, in the same order (new_group is a collective).
            self.replica_group = self.dp_group = None
            for r in range(layout.replicas):
                g = dist.new_group(layout.replica_ranks(r))
                if r == replica:
                    self.replica_group = g
            if layout.replicas > 1:
                for s in range(layout.stages):
                    g = dist.new_group(layout.stage_ranks(s))
                    if s == self.stage:
                        self.dp_group = g
            self.first_rank = layout.replica_ranks(replica)[0]
            self.last_rank = layout.replica_ranks(replica)[-1]

        @property
        def holds_input(self) -> bool:
            return 0 in self.chunk_ids

        @property
        def holds_output(self) -> bool:
            return self.n_chunks - 1 in self.chunk_ids

        def _schedule(self, batch: int, loss_fn, mean: bool = True):
            """A schedule per batch size (PipelineStage fixes its buffers' shapes at the first
            step; an epoch's short last batch gets its own)."""
            from torch.distributed import pipelining as pp

            key = (batch, id(loss_fn), mean)
            if key not in self._schedules:
                m = min(self.microbatches, batch)
                stages = [
                    pp.PipelineStage(
                        chunk, c, self.n_chunks, torch.device("cpu"), group=self.replica_group
                    )
                    for chunk, c in zip(self.chunks, self.chunk_ids, strict=True)
                ]
                name = self.schedule_name
                if name != "interleaved" and m < self.layout.stages:
                    name = "gpipe"  # 1F1B needs M >= S; a tiny last batch runs as GPipe
                if name == "interleaved":
                    sched = pp.ScheduleInterleaved1F1B(
                        stages, n_microbatches=m, loss_fn=loss_fn, scale_grads=mean
                    )
                else:
                    cls = pp.ScheduleGPipe if name == "gpipe" else pp.Schedule1F1B
                    sched = cls(stages[0], n_microbatches=m, loss_fn=loss_fn, scale_grads=mean)
                self._schedules[key] = sched
            return self._schedules[key]

        def train_step(self, x, y, loss_fn, mean: bool = True):
            """`mean`: loss_fn averages over a microbatch, so gradients are averaged over the
            microbatches (the batch's mean); else it sums and they add up."""
            sched = self._schedule(int(x.shape[0]), loss_fn, mean)
            losses: list = []
            kwargs: dict[str, Any] = {}
            if self.holds_output:
                kwargs = {"target": y, "losses": losses}
            if self.holds_input:
                sched.step(x, **kwargs)
            else:
                sched.step(**kwargs)
            if losses:
                stacked = torch.stack([v.detach() for v in losses])
                loss = stacked.mean() if mean else stacked.sum()
            else:
                loss = torch.zeros((), dtype=torch.float32)
            loss = loss.to(torch.float32)
            dist.broadcast(loss, src=self.last_rank, group=self.replica_group)
            self.average_gradients()
            return loss

        def average_gradients(self) -> None:
            """Each stage's gradients averaged over its data-parallel group: one all-reduce."""
            if self.dp_group is None:
                return
            from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if not grads:
                return
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat, group=self.dp_group)
            flat /= self.layout.replicas
            for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
                g.copy_(reduced)

        def clip_grad_norm_(self, max_norm: float) -> float:
            """Clip by the norm of the whole model's gradient (every stage's, summed)."""
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            sq = torch.zeros((), dtype=torch.float64)
            for g in grads:
                sq += g.detach().double().pow(2).sum()
            dist.all_reduce(sq, group=self.replica_group)
            norm = float(sq.sqrt())
            coef = max_norm / (norm + 1e-6)
            if coef < 1:
                for g in grads:
                    g.mul_(coef)
            return norm

        def forward(self, x=None):
            if torch.is_grad_enabled() and self.training:
                raise RuntimeError(
                    "under strategy pipeline, train with sess.train_step(model, x, y, loss_fn); "
                    "model(x) is for evaluation (model.eval(), torch.no_grad())"
                )
            # Chunk c's output goes to chunk c + 1 on stage (c + 1) % S.
            ranks = self.layout.replica_ranks(self.layout.replica_of(self.rank))
            h = x
            for c in range(self.n_chunks):
                owner = ranks[c % self.layout.stages]
                prev = ranks[(c - 1) % self.layout.stages]
                if c > 0 and owner != prev:
                    box = [h]
                    if self.rank == owner:
                        dist.recv_object_list(box, src=prev, group=self.replica_group)
                    elif self.rank == prev:
                        dist.send_object_list(box, dst=owner, group=self.replica_group)
                    h = box[0]
                if self.rank == owner:
                    h = self.chunks[self.chunk_ids.index(c)](h)
                elif self.rank != prev:
                    h = None
            box = [h if self.rank == self.last_rank else None]
            dist.broadcast_object_list(box, src=self.last_rank, group=self.replica_group)
            return box[0]

        def stage_state(self) -> dict[str, Any]:
            return {
                str(c): m.state_dict() for c, m in zip(self.chunk_ids, self.chunks, strict=True)
            }

        def load_stage_state(self, state: dict[str, Any]) -> None:
            for c, m in zip(self.chunk_ids, self.chunks, strict=True):
                m.load_state_dict(state[str(c)])

    return PipelineModel


_CLASS = None


def build(model, workload, rank: int, world_size: int, settings: dict[str, Any]):
    """This rank's PipelineModel: the model cut into stages x chunks_per_rank chunks, of which
    this rank keeps those of its stage. Every rank of the job calls it (it creates the groups)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_module_class()
    stages = int(settings.get("stages", 2))
    schedule = str(settings.get("schedule", "1f1b"))
    if world_size % stages:
        raise ValueError(f"{world_size} workers are not a multiple of pipeline.stages={stages}")
    layout = Layout(stages, world_size // stages)
    v = chunks_per_rank(schedule)
    chunks, _names = cut(model, workload, stages * v, settings.get("split_points"))
    stage = layout.stage_of(rank)
    mine = [c for c in range(stages * v) if c % stages == stage]
    return _CLASS(
        [chunks[c] for c in mine],
        mine,
        stages * v,
        layout,
        rank,
        schedule,
        int(settings.get("microbatches", 4)),
    )
