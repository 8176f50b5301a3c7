"""The queue's cost (docs/benchmarks.md, "Queue"), on the local 3-node cluster:

1. submit-to-RUNNING latency with capacity free: from the command's start to the Ray job's
   RUNNING status, for `ray job submit`, `orch submit` (straight to the Jobs API) and
   `orch submit --queue` (through the queue), the same 1-worker MNIST job, rounds alternating;
2. queue operations per second: enqueue (held jobs, so nothing starts), list, cancel, from one
   client connected to the queue actor; and the SQLite store alone, in-process.

    python bench/queue_latency.py --rounds 3 --ops 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster"))
from local_cluster import LocalCluster  # noqa: E402

ORCH = [sys.executable, "-m", "orchestrator.cli"]
SPEC = ["jobs/mnist_mlp.yaml", "resources.workers=1", "train.epochs=1", "storage_path=s3://orch/b"]

OPS = """
import json, sys, time
from orchestrator.queue import client
n = int(sys.argv[1])
client.connect()
actor = client.handle()
job = json.loads(sys.argv[2])
out = {}
t = time.perf_counter()
for i in range(n):
    client.call(actor, "enqueue", {**job, "id": f"ops-{i}", "state": "HELD"})
out["enqueue"] = n / (time.perf_counter() - t)
t = time.perf_counter()
for _ in range(20):
    client.call(actor, "jobs", True)
out["list (%d jobs)" % n] = 20 / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(n):
    client.call(actor, "cancel", f"ops-{i}")
out["cancel"] = n / (time.perf_counter() - t)
print(json.dumps(out))
"""


def status(c: LocalCluster, sid: str) -> str:
    from orchestrator.cluster.jobs import make_client

    return make_client(c.dashboard_url, env=c.client_env()).get_job_info(sid).status.value


def to_running(c: LocalCluster, cmd: list[str], sid: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=c.env(), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    while True:
        try:
            if status(c, sid) in ("RUNNING", "SUCCEEDED"):
                return time.perf_counter() - t0
        except Exception:  # noqa: BLE001 - the queue has not submitted it yet
            pass
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ops", type=int, default=200)
    args = ap.parse_args()
    from orchestrator.cluster.jobs import make_client

    c = LocalCluster(Path(tempfile.mkdtemp(prefix="orch-bench-queue-")))
    c.up(workers=2, cpus=1, bucket="orch")
    try:
        ray_bin = str(Path(sys.executable).parent / "ray")
        times: dict[str, list[float]] = {
            "ray job submit": [],
            "orch submit": [],
            "orch submit --queue": [],
        }
        client = make_client(c.dashboard_url, env=c.client_env())
        for r in range(args.rounds):
            for name in list(times):
                sid = f"b{r}-{name.split()[0]}-{'q' if 'queue' in name else 'd'}"
                if name == "ray job submit":
                    cmd = [
                        ray_bin,
                        "job",
                        "submit",
                        "--no-wait",
                        "--submission-id",
                        sid,
                        "--working-dir",
                        ".",
                        "--",
                        "orch",
                        "run",
                        *SPEC,
                        "--name",
                        sid,
                    ]
                elif name == "orch submit":
                    cmd = [*ORCH, "submit", *SPEC, "--submission-id", sid, "--name", sid]
                else:
                    cmd = [*ORCH, "submit", *SPEC, "--submission-id", sid, "--queue", "default"]
                times[name].append(to_running(c, cmd, sid))
                client.stop_job(sid)
                while status(c, sid) not in ("STOPPED", "SUCCEEDED", "FAILED"):
                    time.sleep(0.2)
                time.sleep(2)  # the queue sees the end and frees the CPU
        base = statistics.median(times["ray job submit"])
        print(f"submit -> RUNNING, capacity free (median of {args.rounds} rounds)")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:22s} {med:6.2f} s   {med / base:5.2f}x   {[round(t, 2) for t in ts]}")

        job = {
            "queue": "default",
            "priority": 0,
            "preemptible": True,
            "retries": 0,
            "workers": 1,
            "per_worker": {"CPU": 1.0},
            "entrypoint": "true",
            "runtime_env": {},
            "metadata": {},
            "fingerprint": "x",
            "spec": "x",
            "run_name": "x",
            "storage_path": "runs",
        }
        out = subprocess.run(
            [sys.executable, "-c", OPS, str(args.ops), json.dumps(job)],
            env=c.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        print(f"queue operations per second through the actor ({args.ops} jobs)")
        for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items():
            print(f"  {k:22s} {v:8.1f}/s")
    finally:
        c.down()

    from orchestrator.queue.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "q.db")
        t = time.perf_counter()
        for i in range(args.ops):
            store.add({**job, "id": f"s{i}"})
        add = args.ops / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(args.ops):
            store.move(f"s{i}", ("QUEUED",), "CANCELLED")
        move = args.ops / (time.perf_counter() - t)
    print("the SQLite store alone, in-process")
    print(f"  {'add':22s} {add:8.1f}/s\n  {'move (CAS)':22s} {move:8.1f}/s")


if __name__ == "__main__":
    main()
