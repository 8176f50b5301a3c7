"""The queue's policy (orchestrator/queue/policy.py): gang admission in priority order,
backfill that cannot delay a higher-priority job, quotas, preemption, and the why of waiting."""

from __future__ import annotations

from orchestrator.queue.policy import Job, Limits, decide, never_fits, place

TWO = {"n1": {"CPU": 1.0}, "n2": {"CPU": 1.0}}


def job(jid, prio=0, seq=None, workers=1, cpu=1.0, queue="default", **kw) -> Job:
    return Job(
        id=jid,
        queue=queue,
        priority=prio,
        seq=seq if seq is not None else int("".join(c for c in jid if c.isdigit()) or 0),
        workers=workers,
        per_worker={"CPU": cpu, **kw.pop("extra", {})},
        **kw,
    )


def run_to_end(jobs: list[Job], nodes, limits=None) -> list[list[str]]:
    """Every pass starts what the policy says, then the running jobs end: the waves."""
    waves = []
    for _ in range(20):
        waiting = [j for j in jobs if j.state == "QUEUED"]
        if not waiting:
            break
        d = decide(jobs, nodes, limits or {})
        assert d.start, d.why
        running = 0
        for j in jobs:
            if j.id in d.start:
                j.state, j.placement = "RUNNING", d.start[j.id]
                running += j.workers
        assert running <= 2  # never more at once than fit
        waves.append(sorted(d.start))
        for j in jobs:
            if j.state == "RUNNING":
                j.state = "SUCCEEDED"
    return waves


def test_ten_jobs_three_priorities_run_in_priority_order_two_at_a_time():
    prios = [0, 5, 10, 0, 5, 10, 0, 5, 10, 0]
    jobs = [job(f"j{i}", p, seq=i) for i, p in enumerate(prios)]
    waves = run_to_end(jobs, TWO)
    order = [jid for w in waves for jid in w]
    assert [len(w) for w in waves] == [2, 2, 2, 2, 2]
    by_prio = sorted(range(10), key=lambda i: (-prios[i], i))  # FIFO within a priority
    assert [set(w) for w in waves] == [
        {f"j{i}" for i in by_prio[k : k + 2]} for k in range(0, 10, 2)
    ]
    assert len(set(order)) == 10


def test_gang_admission_waits_for_all_workers_and_says_what_is_missing():
    jobs = [
        job("r1", 0, state="RUNNING", placement=["n1"], preemptible=False),
        job("w2", 0, workers=2),
    ]
    d = decide(jobs, TWO, {})
    assert d.start == {}
    assert d.why["w2"] == "needs 2 x {CPU: 1}; 1 CPU free"


def test_a_small_job_cannot_slip_ahead_onto_what_a_higher_one_waits_for():
    jobs = [
        job("r1", 0, state="RUNNING", placement=["n1"], preemptible=False),
        job("big2", 5, workers=2),
        job("small3", 0),
    ]
    d = decide(jobs, TWO, {})
    assert "small3" not in d.start
    assert d.why["small3"] == "behind 'big2' (priority 5)"
    assert d.position == {"big2": 1, "small3": 2}


def test_backfill_on_resources_the_waiting_job_cannot_use():
    nodes = {"n1": {"CPU": 1.0}, "n2": {"CPU": 1.0}, "g": {"CPU": 1.0, "GPU": 1.0}}
    jobs = [
        job("r1", 0, state="RUNNING", placement=["n1"], preemptible=False),
        job("big2", 5, workers=3),  # needs all three CPUs: n2 and g are reserved for it
        job("gpu3", 0, cpu=0.0, extra={"GPU": 1.0}),  # the GPU only: cannot delay big2
        job("cpu4", 0),
    ]
    d = decide(jobs, nodes, {})
    assert list(d.start) == ["gpu3"]
    assert d.why["cpu4"] == "behind 'big2' (priority 5)"


def test_preemption_stops_the_lowest_priority_newest_job_and_waits_for_it():
    jobs = [
        job("a1", 0, state="RUNNING", placement=["n1"], started_at=10.0),
        job("b2", 1, state="RUNNING", placement=["n2"], started_at=20.0),
        job("hi3", 9),
    ]
    d = decide(jobs, TWO, {})
    assert d.preempt == ["a1"] and d.start == {}
    assert d.why["hi3"] == "preempting 'a1' (priority 0); starts when they have stopped"
    # Next pass: a1 is stopping; nothing more is preempted, hi3 still waits for it.
    jobs[0].state = "PREEMPTING"
    d = decide(jobs, TWO, {})
    assert d.preempt == [] and d.start == {}
    assert "preempting 'a1'" in d.why["hi3"]
    # a1 has stopped and is queued again (its old place): hi3 starts, a1 waits behind b2.
    jobs[0].state, jobs[0].placement = "QUEUED", []
    d = decide(jobs, TWO, {})
    assert d.start == {"hi3": ["n1"]}
    assert d.why["a1"] == "needs 1 x {CPU: 1}; 0 CPU free"


def test_no_preemption_of_equal_priority_or_non_preemptible_jobs():
    jobs = [
        job("a1", 5, state="RUNNING", placement=["n1"]),
        job("b2", 0, state="RUNNING", placement=["n2"], preemptible=False),
        job("c3", 5),
    ]
    d = decide(jobs, TWO, {})
    assert d.preempt == [] and d.start == {}
    assert d.why["c3"].startswith("needs 1 x {CPU: 1}")


def test_preempts_only_as_many_as_needed():
    nodes = {f"n{i}": {"CPU": 1.0} for i in range(4)}
    jobs = [
        job(f"low{i}", 0, state="RUNNING", placement=[f"n{i}"], started_at=float(i))
        for i in range(4)
    ] + [job("hi9", 3, workers=2)]
    d = decide(jobs, nodes, {})
    assert sorted(d.preempt) == ["low2", "low3"]  # the two started last


def test_quota_blocks_its_queue_only():
    limits = {"team-a": Limits(cpus=1.0)}
    jobs = [
        job("a1", 0, queue="team-a", state="RUNNING", placement=["n1"]),
        job("a2", 9, queue="team-a"),
        job("b3", 0),
    ]
    d = decide(jobs, TWO, limits)
    assert d.start == {"b3": ["n2"]}
    assert d.why["a2"] == "queue 'team-a' at its quota: 1 of 1 CPUs in use, this job needs 1"


def test_gpu_hour_quota():
    nodes = {"g": {"CPU": 4.0, "GPU": 2.0}}
    limits = {"team-a": Limits(gpu_hours_per_day=8.0)}
    jobs = [job("a1", 0, queue="team-a", extra={"GPU": 1.0}), job("c2", 0, queue="team-a")]
    d = decide(jobs, nodes, limits, gpu_hours={"team-a": 8.5})
    assert "a1" not in d.start and "c2" in d.start  # a CPU-only job does not spend GPU-hours
    assert d.why["a1"] == "queue 'team-a' at its quota: 8.50 of 8 GPU-hours in the last 24 h"


def test_held_jobs_wait_and_reserve_nothing():
    jobs = [job("h1", 9, state="HELD"), job("x2", 0)]
    d = decide(jobs, {"n1": {"CPU": 1.0}}, {})
    assert d.start == {"x2": ["n1"]}
    assert d.why["h1"] == "held (orch queue release h1)"


def test_place_packs_and_never_fits():
    assert place(2, {"CPU": 1.0}, {"a": {"CPU": 4.0}, "b": {"CPU": 2.0}}) == ["b", "b"]
    assert place(3, {"CPU": 2.0}, {"a": {"CPU": 3.0}, "b": {"CPU": 3.0}}) is None
    assert never_fits(2, {"CPU": 1.0}, TWO) is None
    assert never_fits(3, {"CPU": 1.0}, TWO) == (
        "3 x {CPU: 1} can never run here: the whole cluster has 2 CPU on 2 node(s)"
    )
    assert never_fits(1, {"CPU": 1.0, "GPU": 1.0}, TWO).startswith("1 x {CPU: 1, GPU: 1}")


def test_jobs_started_in_the_same_pass_count_as_taken():
    """Two start now and fill the cluster: the rest need CPUs, not 'behind' anyone."""
    jobs = [job("a1", 10), job("b2", 10), job("wide3", 5, workers=2), job("d4", 5)]
    d = decide(jobs, TWO, {})
    assert sorted(d.start) == ["a1", "b2"]
    assert d.why == {
        "wide3": "needs 2 x {CPU: 1}; 0 CPU free",
        "d4": "needs 1 x {CPU: 1}; 0 CPU free",
    }
