"""Who starts next: gang admission in priority order, backfill that cannot delay a
higher-priority job, quotas per queue, and preemption. Pure: no Ray, no SQLite, no clock.

decide() takes the waiting jobs, the admitted ones (with the node each of their workers was
counted on), the nodes' resources and the queues' limits, and returns which jobs to start (with
a placement), which running jobs to preempt, and for every job left waiting a sentence saying
why. The service (orchestrator/queue/service.py) calls it once per tick.

Rules, in order, for each waiting job by (priority desc, submission order):

1. held: waits until released.
2. its queue's quota (CPUs, GPUs in use by the queue's admitted jobs; GPU-hours spent in the
   last 24 h) would be exceeded: waits; it reserves nothing, so other queues go on.
3. all its workers fit now on the free resources left after every higher-priority job that is
   waiting has reserved what it will take: it starts (gang: all workers or none).
4. it does not fit, but stopping preemptible running jobs of lower priority would make it fit:
   those are preempted (lowest priority first, then the most recently started: the least work
   lost), and it waits for them to stop, with their resources reserved for it.
5. otherwise it waits and reserves what it would take of the free resources, so that a smaller,
   lower-priority job can start ahead only on resources this one cannot use now: it can never
   be delayed by a job behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WAITING = ("QUEUED", "HELD")
# Admitted: their workers hold (or are about to hold) resources.
ADMITTED = ("STARTING", "RUNNING", "PREEMPTING", "CANCELLING")
EPS = 1e-9


@dataclass
class Job:
    id: str
    queue: str
    priority: int
    seq: int  # submission order; a job keeps it when it returns to the queue
    workers: int
    per_worker: dict[str, float]
    state: str = "QUEUED"
    preemptible: bool = True
    started_at: float = 0.0
    placement: list[str] = field(default_factory=list)  # node id per worker, when admitted

    def total(self) -> dict[str, float]:
        return {k: v * self.workers for k, v in self.per_worker.items() if v > 0}


@dataclass
class Limits:
    """A queue's quota; None: no limit."""

    cpus: float | None = None
    gpus: float | None = None
    gpu_hours_per_day: float | None = None


@dataclass
class Decision:
    start: dict[str, list[str]] = field(default_factory=dict)  # job id -> node id per worker
    preempt: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # waiting job id -> reason
    position: dict[str, int] = field(default_factory=dict)  # waiting job id -> 1, 2, ...


def fmt_res(res: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items()) if v > 0) + "}"


def place(
    workers: int, per_worker: dict[str, float], free: dict[str, dict[str, float]]
) -> list[str] | None:
    """A node for each worker, packing (best fit: the node with the least room left that
    holds it), or None when not all fit. Does not change `free`."""
    room = {n: dict(r) for n, r in free.items()}
    need = {k: v for k, v in per_worker.items() if v > 0}
    out: list[str] = []
    for _ in range(workers):
        fits = [
            n for n, r in room.items() if all(r.get(k, 0.0) + EPS >= v for k, v in need.items())
        ]
        if not fits:
            return None
        best = min(fits, key=lambda n: (sum(room[n].get(k, 0.0) for k in need), n))
        for k, v in need.items():
            room[best][k] = room[best].get(k, 0.0) - v
        out.append(best)
    return out


def take(free: dict[str, dict[str, float]], placement: list[str], per_worker: dict[str, float]):
    for node in placement:
        if node in free:
            for k, v in per_worker.items():
                free[node][k] = free[node].get(k, 0.0) - v


def give(free: dict[str, dict[str, float]], placement: list[str], per_worker: dict[str, float]):
    for node in placement:
        if node in free:
            for k, v in per_worker.items():
                free[node][k] = free[node].get(k, 0.0) + v


def reserve_partial(free: dict[str, dict[str, float]], job: Job) -> None:
    """Take from `free` what `job` could take now: every worker that fits, and for those that
    don't, the free amounts of the resources they need (so nothing smaller slips in)."""
    placed = place(job.workers, job.per_worker, free) or []
    n = len(placed)
    if not placed:
        # Place worker by worker until one does not fit.
        for i in range(job.workers, 0, -1):
            got = place(i, job.per_worker, free)
            if got:
                placed, n = got, i
                break
    take(free, placed, job.per_worker)
    rest = {k: v * (job.workers - n) for k, v in job.per_worker.items() if v > 0}
    for node in sorted(free):
        for k in list(rest):
            have = max(0.0, free[node].get(k, 0.0))
            used = min(have, rest[k])
            if used > 0:
                free[node][k] = have - used
                rest[k] -= used


def total_free(free: dict[str, dict[str, float]], keys) -> dict[str, float]:
    return {k: max(0.0, sum(max(0.0, r.get(k, 0.0)) for r in free.values())) for k in keys}


def quota_problem(
    job: Job, name: str, limits: Limits | None, in_use: dict[str, float], gpu_hours: float
) -> str | None:
    if limits is None:
        return None
    need = job.total()
    for key, cap, unit in (("CPU", limits.cpus, "CPUs"), ("GPU", limits.gpus, "GPUs")):
        if cap is None or need.get(key, 0.0) <= 0:
            continue
        if in_use.get(key, 0.0) + need[key] > cap + EPS:
            return (
                f"queue '{name}' at its quota: {in_use.get(key, 0.0):g} of {cap:g} {unit} "
                f"in use, this job needs {need[key]:g}"
            )
    cap = limits.gpu_hours_per_day
    if cap is not None and need.get("GPU", 0.0) > 0 and gpu_hours + EPS >= cap:
        return f"queue '{name}' at its quota: {gpu_hours:.2f} of {cap:g} GPU-hours in the last 24 h"
    return None


def decide(
    jobs: list[Job],
    nodes: dict[str, dict[str, float]],
    limits: dict[str, Limits],
    gpu_hours: dict[str, float] | None = None,
) -> Decision:
    """One scheduling pass. `jobs`: every waiting and admitted job; `nodes`: alive nodes' total
    resources by node id; `limits`: quota per queue name; `gpu_hours`: GPU-hours each queue used
    in the last 24 hours."""
    gpu_hours = gpu_hours or {}
    free = {n: dict(r) for n, r in nodes.items()}
    in_use: dict[str, dict[str, float]] = {}
    admitted = [j for j in jobs if j.state in ADMITTED]
    for j in admitted:
        take(free, j.placement, j.per_worker)
        use = in_use.setdefault(j.queue, {})
        for k, v in j.total().items():
            use[k] = use.get(k, 0.0) + v
    # Resources already on their way back (jobs being preempted), and who they are promised to.
    stopping = [j for j in admitted if j.state == "PREEMPTING"]
    victims_pool = sorted(
        (j for j in admitted if j.state in ("STARTING", "RUNNING") and j.preemptible),
        key=lambda j: (j.priority, -j.started_at, j.id),
    )
    d = Decision()
    blockers: list[Job] = []
    unreserved = {n: dict(r) for n, r in free.items()}  # free, less the starts, no reservations
    waiting = sorted((j for j in jobs if j.state in WAITING), key=lambda j: (-j.priority, j.seq))
    for pos, job in enumerate(waiting, 1):
        d.position[job.id] = pos
        if job.state == "HELD":
            d.why[job.id] = f"held (orch queue release {job.id})"
            continue
        problem = quota_problem(
            job,
            job.queue,
            limits.get(job.queue),
            in_use.get(job.queue, {}),
            gpu_hours.get(job.queue, 0.0),
        )
        if problem:
            d.why[job.id] = problem
            continue
        spot = place(job.workers, job.per_worker, free)
        if spot is not None:
            d.start[job.id] = spot
            take(free, spot, job.per_worker)
            take(unreserved, spot, job.per_worker)
            use = in_use.setdefault(job.queue, {})
            for k, v in job.total().items():
                use[k] = use.get(k, 0.0) + v
            continue
        # Would it fit if nobody ahead had reserved anything? Then it waits behind them.
        ahead = next(
            (b for b in blockers if place(job.workers, job.per_worker, unreserved) is not None),
            None,
        )
        # Preemption: resources of jobs already stopping, then lower-priority victims.
        trial = {n: dict(r) for n, r in free.items()}
        chosen: list[Job] = []
        for j in stopping:
            if j.priority < job.priority:
                give(trial, j.placement, j.per_worker)
                chosen.append(j)
        spot = place(job.workers, job.per_worker, trial)
        new_victims: list[Job] = []
        if spot is None and ahead is None:
            for v in victims_pool:
                if v.priority >= job.priority or v.id in d.preempt:
                    continue
                give(trial, v.placement, v.per_worker)
                new_victims.append(v)
                spot = place(job.workers, job.per_worker, trial)
                if spot is not None:
                    break
        if spot is not None and (chosen or new_victims):
            for v in new_victims:
                d.preempt.append(v.id)
                victims_pool.remove(v)
            stopping_for = chosen + new_victims
            names = ", ".join(f"'{v.id}' (priority {v.priority})" for v in stopping_for)
            d.why[job.id] = f"preempting {names}; starts when they have stopped"
            # The freed resources are promised to this job.
            for v in stopping_for:
                if v in stopping:
                    stopping.remove(v)
            reserve_partial(free, job)
            blockers.append(job)
            continue
        if ahead is not None:
            d.why[job.id] = f"behind '{ahead.id}' (priority {ahead.priority})"
        else:
            have = total_free(free, job.per_worker)
            have_s = ", ".join(f"{v:g} {k} free" for k, v in sorted(have.items()))
            d.why[job.id] = (
                f"needs {job.workers} x {fmt_res(job.per_worker)}; {have_s or 'nothing free'}"
                + (" (largest node too small)" if _node_too_small(job, nodes) else "")
            )
        reserve_partial(free, job)
        blockers.append(job)
    return d


def _node_too_small(job: Job, nodes: dict[str, dict[str, float]]) -> bool:
    return place(1, job.per_worker, nodes) is None


def never_fits(workers: int, per_worker: dict[str, float], nodes: dict[str, dict[str, float]]):
    """None when the whole cluster (empty) could hold the job, else why not."""
    if place(workers, per_worker, nodes) is not None:
        return None
    total = total_free(nodes, per_worker)
    return (
        f"{workers} x {fmt_res(per_worker)} can never run here: the whole cluster has "
        + ", ".join(f"{v:g} {k}" for k, v in sorted(total.items()))
        + f" on {len(nodes)} node(s)"
    )
