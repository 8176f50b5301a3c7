"""Submit latency and Jobs API throughput on the local multi-node cluster (issue 24, goal 4).

    python bench/submit_latency.py                     # 3 rounds; bursts of 1, 4, 8, 16 jobs
    python bench/submit_latency.py --rounds 5 --bursts 1 8 32

Starts cluster/local_cluster.py's cluster (a head with the Jobs API, two 1-CPU worker nodes,
an S3 server) and measures, on the same 2-worker MNIST job with its run directory in the bucket:

1. time to the first training step, from the command's start to the first metrics row's own
   time, for
     orch run --address GCS     a driver on this machine joined to the cluster
     orch submit                the Jobs API, straight (orch's driver runs on the head)
     ray job submit             Ray's own CLI, `--working-dir . -- orch run SPEC`
   rounds alternating;
2. the Jobs API itself: submissions accepted per second from one client (jobs that print and
   exit), and bursts of N jobs that each hold their driver for 20 s: how long until all N
   are RUNNING, and the slowest one's submit-to-RUNNING. A burst degrades when that grows
   faster than N.
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
SPEC = ["jobs/mnist_mlp.yaml", "train.epochs=1", "checkpoint.every_steps=1000"]


def _first_row_time(c: LocalCluster, run: str) -> float:
    """The first metrics row's own time, read from the run's metrics chunks in the bucket."""
    import os
    from unittest import mock

    from orchestrator import rundir

    with mock.patch.dict(os.environ, c.s3_env()):
        rows = rundir.read_metrics(f"s3://{c.bucket}/sl/{run}")
    return min(r["time"] for r in rows)


def _client(c: LocalCluster):
    from orchestrator.cluster.jobs import make_client

    return make_client(c.dashboard_url, env=c.client_env())


def _wait_end(c: LocalCluster, sid: str, timeout_s: float = 600) -> str:
    client = _client(c)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = client.get_job_info(sid).status.value
        if st in ("SUCCEEDED", "FAILED", "STOPPED"):
            return st
        time.sleep(0.5)
    raise TimeoutError(sid)


def first_step(c: LocalCluster, side: str, run: str) -> float:
    spec = [*SPEC, f"storage_path=s3://{c.bucket}/sl", f"name={run}"]
    t0 = time.time()
    if side == "orch run --address":
        out = subprocess.run(
            [*ORCH, "run", *spec, "--address", c.gcs_address],
            env=c.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    else:
        if side == "orch submit":
            cmd = [*ORCH, "submit", *spec, "--submission-id", run]
        else:
            cmd = [
                str(Path(sys.executable).parent / "ray"),
                "job",
                "submit",
                "--no-wait",
                "--submission-id",
                run,
                "--working-dir",
                ".",
                "--",
                "orch",
                "run",
                *spec,
            ]
        out = subprocess.run(cmd, env=c.env(), cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        st = _wait_end(c, run)
        assert st == "SUCCEEDED", (run, st, _client(c).get_job_logs(run)[-3000:])
    return _first_row_time(c, run) - t0


def accepted_per_s(c: LocalCluster, n: int) -> float:
    client = _client(c)
    t0 = time.perf_counter()
    ids = [client.submit_job(entrypoint="echo ok") for _ in range(n)]
    rate = n / (time.perf_counter() - t0)
    for sid in ids:
        _wait_end(c, sid)
    return rate


def burst(c: LocalCluster, n: int, tag: str) -> dict:
    """n jobs that hold their driver 20 s: time until all are RUNNING, slowest submit->RUNNING."""
    client = _client(c)
    t0 = time.monotonic()
    sids = {}
    for i in range(n):
        sid = client.submit_job(
            entrypoint="python -c 'import time; time.sleep(20)'",
            submission_id=f"burst-{tag}-{n}-{i}",
        )
        sids[sid] = time.monotonic()
    running: dict[str, float] = {}
    deadline = time.monotonic() + 300
    while len(running) < n and time.monotonic() < deadline:
        for sid in sids:
            if sid not in running:
                st = client.get_job_info(sid).status.value
                if st in ("RUNNING", "SUCCEEDED"):
                    running[sid] = time.monotonic()
                elif st in ("FAILED", "STOPPED"):
                    running[sid] = float("nan")
        time.sleep(0.2)
    all_running = time.monotonic() - t0
    waits = [running[s] - sids[s] for s in sids if s in running]
    failed = sum(1 for w in waits if w != w)
    for sid in sids:
        _wait_end(c, sid)
    return {
        "n": n,
        "all_running_s": round(all_running, 2),
        "slowest_submit_to_running_s": round(max((w for w in waits if w == w), default=0), 2),
        "failed": failed,
        "never_running": n - len(running),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="0: the Jobs API part only")
    ap.add_argument("--accept", type=int, default=40, help="jobs for the acceptance rate")
    ap.add_argument("--bursts", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    c = LocalCluster(Path(tempfile.mkdtemp(prefix="orch-bench-submit-")))
    c.up(workers=2, cpus=1, bucket="orch")
    sides = ["orch run --address", "orch submit", "ray job submit"]
    times: dict[str, list[float]] = {s: [] for s in sides}
    try:
        if a.rounds:
            first_step(c, "orch run --address", "warmup")  # imports, the bucket, workers
        for r in range(a.rounds):
            for i, side in enumerate(sides):
                times[side].append(first_step(c, side, f"r{r}s{i}"))
            print(
                f"round {r + 1}/{a.rounds}: "
                + ", ".join(f"{s} {v[-1]:.1f} s" for s, v in times.items()),
                flush=True,
            )
        rate = accepted_per_s(c, a.accept)
        bursts = [burst(c, n, "b") for n in a.bursts]
    finally:
        c.down()

    if a.rounds:  # --rounds 0: the Jobs API part only
        base = statistics.median(times["orch run --address"])
        print(f"\nto the first step, 2-worker MNIST on 2 nodes (medians of {a.rounds} rounds)\n")
        print("| side | s | / orch run --address |")
        print("|---|---:|---:|")
        for side, ts in times.items():
            med = statistics.median(ts)
            print(f"| {side} | {med:.1f} | {med / base:.2f}x |")
    print(f"\nJobs API: {rate:.1f} submissions accepted per second ({a.accept} from one client)\n")
    print("| jobs at once | all RUNNING after s | slowest submit -> RUNNING s | failed |")
    print("|---:|---:|---:|---:|")
    for b in bursts:
        print(
            f"| {b['n']} | {b['all_running_s']:.1f} | {b['slowest_submit_to_running_s']:.1f} "
            f"| {b['failed'] + b['never_running']} |"
        )
    if a.json:
        Path(a.json).write_text(
            json.dumps({"first_step": times, "accept_per_s": rate, "bursts": bursts}, indent=1)
        )


if __name__ == "__main__":
    main()
