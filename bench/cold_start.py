"""Cold start of `orch run` against torchrun: time to the first logged step, the whole
one-epoch run, what is left running afterwards, and where orch's start-up goes.

    python bench/cold_start.py                 # 3 rounds
    python bench/cold_start.py --rounds 5 --json out.json

The same 2-worker MNIST MLP, one epoch, each side a fresh process started from this script,
rounds alternating so that machine noise hits every side alike:

  torchrun       torchrun --nproc_per_node 2 jobs/mnist_mlp.py --epochs 1
  orch           orch run jobs/mnist_mlp.yaml train.epochs=1   (embedded Ray, no dashboard)
  orch-nopool    the same with ORCH_POOLED_WORKERS=0: Train's controller and workers in fresh
                 processes, as before orchestrator/launch/pooled.py
  orch+dash      the same with --dashboard (the embedded Ray's dashboard, the old default)
  orch@head      the same after `orch up` (a local head started once, which the run joins by
                 itself), as a user iterating would

"first step" is from the process start to the first logged row's own time; "run" is the whole
process, exit included. After each process exits, processes still in its session are counted
(and then ended). orch's start-up breakdown comes from the run's summary.json ("startup": the
driver's and the workers' own stamps, orchestrator/launch/lifecycle.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from overhead import _rows_from_stdout  # bench/overhead.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

PHASES = ("orch_s", "ray_s", "workers_s", "setup_s", "first_step_s")


def _leftovers(sid: int) -> list[str]:
    """Processes still in session `sid` (the run's own), ended after they are counted."""
    left = []
    for p in psutil.process_iter(["pid", "name"]):
        try:
            if os.getsid(p.info["pid"]) == sid:
                left.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    names = []
    for p in left:
        try:
            names.append(p.name())
            p.kill()
        except psutil.Error:
            pass
    return names


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, list[str]]:
    """(process start, process end, stdout, leftovers) of one command in its own session."""
    t0 = time.time()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out, _ = proc.communicate(timeout=900)
    t1 = time.time()
    time.sleep(0.5)  # what is still there half a second after the exit
    left = _leftovers(proc.pid)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}")
    return t0, t1, out, left


def torchrun(env: dict[str, str]) -> dict:
    cmd = [
        str(BIN / "torchrun"),
        "--nproc_per_node",
        "2",
        str(ROOT / "jobs/mnist_mlp.py"),
        "--epochs",
        "1",
        "--log-every",
        "10",
    ]
    t0, t1, out, left = _run(cmd, {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    rows = _rows_from_stdout(out)
    first = min(r["time"] for r in rows if "time" in r)
    return {"first_step_s": first - t0, "run_s": t1 - t0, "leftovers": left}


def orch(env: dict[str, str], storage: str, extra: list[str]) -> dict:
    name = f"cold{time.time_ns()}"
    cmd = [
        str(BIN / "orch"),
        "run",
        str(ROOT / "jobs/mnist_mlp.yaml"),
        "train.epochs=1",
        "train.log_every=10",
        f"storage_path={storage}",
        f"name={name}",
        *extra,
    ]
    t0, t1, out, left = _run(cmd, {**env, "PYTHONUNBUFFERED": "1"})
    run_dir = Path(storage) / name
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "first_step_s": min(r["time"] for r in rows) - t0,
        "run_s": t1 - t0,
        "leftovers": left,
        "startup": summary.get("startup", {}),
        "joined_head": "joining the local head" in out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write every round's figures here")
    ap.add_argument("--no-head", action="store_true", help="leave out the orch@head side")
    a = ap.parse_args()
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "ORCH_DASHBOARD"):
        env.pop(k, None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    sides = ["torchrun", "orch", "orch-nopool", "orch+dash"] + ([] if a.no_head else ["orch@head"])
    results: dict[str, list[dict]] = {s: [] for s in sides}
    # Two homes: runs of the embedded sides find no head in theirs; `orch up` starts one in
    # the other, which the orch@head side's runs join.
    no_head = {**env, "ORCH_HOME": tempfile.mkdtemp(prefix="orch-home-none-")}
    with_head = {**env, "ORCH_HOME": tempfile.mkdtemp(prefix="orch-home-head-")}
    if not a.no_head:
        up = subprocess.run([str(BIN / "orch"), "up", "--num-cpus", "2"], env=with_head)
        if up.returncode != 0:
            raise SystemExit("orch up failed")
    try:
        with tempfile.TemporaryDirectory() as storage:
            for r in range(a.rounds):
                for side in sides:
                    if side == "torchrun":
                        got = torchrun(no_head)
                    elif side == "orch":
                        got = orch(no_head, storage, [])
                    elif side == "orch-nopool":
                        got = orch({**no_head, "ORCH_POOLED_WORKERS": "0"}, storage, [])
                    elif side == "orch+dash":
                        got = orch(no_head, storage, ["--dashboard"])
                    else:
                        got = orch(with_head, storage, [])
                        assert got["joined_head"], "the run did not join orch up's head"
                    results[side].append(got)
                print(
                    f"round {r + 1}/{a.rounds}: "
                    + ", ".join(
                        f"{s} {v[-1]['first_step_s']:.1f}/{v[-1]['run_s']:.1f} s"
                        for s, v in results.items()
                    ),
                    flush=True,
                )
    finally:
        if not a.no_head:
            subprocess.run([str(BIN / "orch"), "down"], env=with_head)

    def med(side: str, key: str) -> float:
        return statistics.median(x[key] for x in results[side])

    base_first, base_run = med("torchrun", "first_step_s"), med("torchrun", "run_s")
    print(f"\nmedians of {a.rounds} rounds, 2-worker MNIST MLP, 1 epoch\n")
    print(
        "| side | to first step s | whole run s | first step / torchrun | run / torchrun "
        "| left running after exit |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for side in sides:
        f, w = med(side, "first_step_s"), med(side, "run_s")
        left = sorted({n for x in results[side] for n in x["leftovers"]})
        print(
            f"| {side} | {f:.1f} | {w:.1f} | {f / base_first:.2f}x | {w / base_run:.2f}x "
            f"| {', '.join(left) or 'nothing'} |"
        )
    print("\norch's start-up, medians in s (summary.json 'startup'):\n")
    print("| side | " + " | ".join(p[:-2].replace("_", " ") for p in PHASES) + " | in all |")
    print("|---|" + "---:|" * (len(PHASES) + 1))
    for side in sides[1:]:
        vals = [
            statistics.median(x["startup"].get(p, float("nan")) for x in results[side])
            for p in (*PHASES, "to_first_step_s")
        ]
        print(f"| {side} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
