"""200 submissions through the queue into real Ray jobs (issue 22, must-show 6), with the queue's
process SIGKILLed twice while they run: every job ends, each ran once, none lost.

    python bench/queue_soak.py                  # 200 jobs from 4 processes, 2 kills
    python bench/queue_soak.py --jobs 40 --kills 1

It starts the local multi-node cluster of cluster/local_cluster.py (a head with no CPUs and two
worker nodes, 4 logical CPUs each: 8 one-CPU jobs at once) in a temp folder, and stops it at the
end. The jobs are real Ray jobs, started by the queue through the Jobs API, but their entrypoint
is a one-line Python command that appends the queue's id and attempt of the job to a file,
not a training run: what is measured is the queue, not Train's start-up (bench/submit_latency.py
measures that). Four processes submit at once through the queue's actor, as four users of
`orch submit --queue` would; the actor is SIGKILLed (Ray restarts it) after a third and after
two thirds of the jobs have ended.

Checked, and the script exits 1 if any fails: the queue holds each of the N ids once, every one
SUCCEEDED at attempt 1; the Jobs API has each id once, SUCCEEDED, attempt 1; the file has each
id exactly once. Printed: submissions per second into the queue, jobs ended per second, and how
long each restart of the queue took.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "cluster"))

ENTRY = (
    "python -c \"import os; open('{log}', 'a').write(os.environ['ORCH_QUEUE_JOB'] + ' ' + "
    "os.environ['ORCH_QUEUE_ATTEMPT'] + '\\n')\""
)


def job(i: int, log: str, storage: str) -> dict:
    return {
        "id": f"soak-{i:03d}",
        "queue": "default",
        "priority": i % 3,
        "preemptible": False,  # a preempted job runs again by design: not what is counted here
        "retries": 0,
        "workers": 1,
        "per_worker": {"CPU": 1.0},
        "entrypoint": ENTRY.format(log=log),
        "runtime_env": {"env_vars": {}},
        "metadata": {},
        "fingerprint": "soak",
        "spec": "-",
        "run_name": f"soak-{i:03d}",
        "storage_path": storage,
    }


def submitter(env: dict, ids: list[int], log: str, storage: str, out: mp.Queue) -> None:
    os.environ.update(env)
    from orchestrator.queue import client

    client.connect()
    actor = client.handle()
    t0 = time.time()
    for i in ids:
        for _ in range(60):  # the actor may be restarting: a client retries, as the CLI would
            try:
                client.call(actor, "enqueue", job(i, log, storage))
                break
            except Exception:  # noqa: BLE001
                time.sleep(1)
                actor = client.handle()
    out.put((len(ids), time.time() - t0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1200)
    args = ap.parse_args()

    from local_cluster import LocalCluster

    tmp = Path(tempfile.mkdtemp(prefix="queue-soak-"))
    log = str(tmp / "ran.log")
    storage = str(tmp / "runs")
    cluster = LocalCluster(tmp / "cluster")
    failures: list[str] = []
    try:
        cluster.up(workers=2, cpus=4, bucket="orch")
        env = cluster.client_env()
        os.environ.update(env)
        from orchestrator.queue import client

        client.connect()
        actor = client.handle()
        ctx = mp.get_context("spawn")
        results: mp.Queue = ctx.Queue()
        chunks = [list(range(args.jobs))[k :: args.procs] for k in range(args.procs)]
        t0 = time.time()
        procs = [
            ctx.Process(target=submitter, args=(env, c, log, storage, results)) for c in chunks
        ]
        for p in procs:
            p.start()
        kills_at = [args.jobs * (k + 1) // (args.kills + 1) for k in range(args.kills)]
        restarts: list[float] = []
        ended_at = None
        last = -1
        while time.time() - t0 < args.timeout:
            try:
                jobs = client.call(actor, "jobs", True)
            except Exception:  # noqa: BLE001 - being restarted
                time.sleep(0.5)
                actor = client.handle(create=False)
                continue
            done = sum(j["state"] in ("SUCCEEDED", "FAILED", "STOPPED", "CANCELLED") for j in jobs)
            if done != last and done % 20 == 0:
                print(f"  {time.time() - t0:6.1f} s: {len(jobs)} in the queue, {done} ended")
                last = done
            if kills_at and done >= kills_at[0]:
                kills_at.pop(0)
                pid = ray_get_info(actor)["pid"]
                os.kill(pid, signal.SIGKILL)
                k0 = time.time()
                while True:
                    try:
                        actor = client.handle(create=False)
                        if ray_get_info(actor)["pid"] != pid:
                            break
                    except Exception:  # noqa: BLE001
                        pass
                    time.sleep(0.2)
                restarts.append(time.time() - k0)
                print(
                    f"  killed the queue (pid {pid}) at {done} ended: back in {restarts[-1]:.1f} s"
                )
            if len(jobs) == args.jobs and done == args.jobs:
                ended_at = time.time() - t0
                break
            time.sleep(0.5)
        for p in procs:
            p.join(timeout=60)
        jobs = client.call(actor, "jobs", True)

        # The checks.
        ids = [j["id"] for j in jobs]
        want = {f"soak-{i:03d}" for i in range(args.jobs)}
        if set(ids) != want or len(ids) != len(want):
            failures.append(f"queue holds {len(ids)} rows, {len(set(ids) & want)} of the ids")
        bad = [
            (j["id"], j["state"], j["attempt"])
            for j in jobs
            if (j["state"], j["attempt"]) != ("SUCCEEDED", 1)
        ]
        if bad:
            failures.append(f"{len(bad)} jobs not SUCCEEDED at attempt 1: {bad[:5]}")
        from orchestrator.cluster.jobs import make_client

        ray_jobs = [
            r
            for r in make_client(cluster.dashboard_url, env=cluster.client_env()).list_jobs()
            if (r.submission_id or "").startswith("soak-")
        ]
        per_id = Counter(r.submission_id for r in ray_jobs)
        if set(per_id) != want or max(per_id.values(), default=0) != 1:
            failures.append(f"Jobs API: {len(ray_jobs)} jobs for {len(per_id)} ids")
        if {str(r.status) for r in ray_jobs} - {"SUCCEEDED", "JobStatus.SUCCEEDED"}:
            failures.append(f"Jobs API statuses: {Counter(str(r.status) for r in ray_jobs)}")
        if {r.metadata.get("orch_queue_attempt") for r in ray_jobs} != {"1"}:
            failures.append("a Ray job of an attempt other than 1")
        lines = Path(log).read_text().split("\n") if Path(log).exists() else []
        ran = Counter(x.split()[0] for x in lines if x.strip())
        if set(ran) != want or max(ran.values(), default=0) != 1:
            twice = [k for k, v in ran.items() if v > 1]
            failures.append(
                f"ran: {len(ran)} ids, twice: {twice[:5]}, missing: {len(want - set(ran))}"
            )

        print()
        print(
            f"jobs: {args.jobs} from {args.procs} processes; queue killed {len(restarts)} time(s)"
        )
        per_proc = [results.get(timeout=5) for _ in procs]
        print(
            "each process submitted "
            + ", ".join(f"{n} in {s:.1f} s" for n, s in per_proc)
            + " (retrying while the queue restarted)"
        )
        slowest = max(sec for _, sec in per_proc)
        print(
            f"{args.jobs} submissions in {slowest:.1f} s from {args.procs} processes at once: "
            f"{args.jobs / slowest:.0f} submissions/s into the queue"
        )
        if ended_at:
            print(
                f"all ended in {ended_at:.1f} s: {args.jobs / ended_at:.2f} jobs/s through 8 slots"
            )
        print("queue restarts: " + ", ".join(f"{r:.1f} s" for r in restarts))
        print(f"queue: {Counter((j['state'], j['attempt']) for j in jobs)}")
        print(
            f"Jobs API: {len(ray_jobs)} jobs, {len(per_id)} ids; "
            f"file: {sum(ran.values())} lines, {len(ran)} ids"
        )
    finally:
        cluster.down()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(
        "OK: every id once in the queue, in the Jobs API and in the file; "
        "all SUCCEEDED at attempt 1"
    )
    return 0


def ray_get_info(actor) -> dict:
    import ray

    return ray.get(actor.info.remote(), timeout=10)


if __name__ == "__main__":
    sys.exit(main())
