"""`orch run` of the MNIST MLP on real local Ray: 2-worker DDP learns, a stopped run resumes,
ledger rows per event, and `orch validate` starts no Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator import ledger
from orchestrator.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ORCH = [sys.executable, "-m", "orchestrator.cli"]


def test_two_worker_ddp_learns_and_writes_ledger(mnist_reference_run):
    # The session's reference run (tests/conftest.py): 6 epochs, a checkpoint every 32 steps.
    summary, storage = mnist_reference_run["summary"], mnist_reference_run["storage"]
    assert summary["status"] == "SUCCEEDED", summary["error"]
    # 6 epochs of 2 x 64 examples per step over 4,000 images: 32 steps per epoch
    assert summary["metrics"]["step"] == 192
    assert summary["metrics"]["accuracy"] > 0.9
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "spec.resolved.yaml").exists()
    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "each step once, in order"
    losses = [r["loss"] for r in rows]
    assert losses[-1] < losses[0]
    assert (run_dir / "checkpoint_000192" / "_COMPLETE").exists()
    assert (run_dir / "checkpoint_000160" / "_COMPLETE").exists()
    assert not (run_dir / "checkpoint_000128").exists(), "keep: 2 checkpoints"
    events = [r for r in ledger.read_events(storage).to_pylist() if r["run_name"] == "ddp2"]
    assert [e["status"] for e in events] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert json.loads(events[-1]["metrics"])["accuracy"] == summary["metrics"]["accuracy"]
    # Launched in the session's embedded Ray: no PlacementGroupCleaner, no DatasetManager.
    assert mnist_reference_run["new_helper_actors"] == set()


def _orch_run(args, faults=None, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ORCH_FAULTS", None)
    if faults:
        env["ORCH_FAULTS"] = json.dumps(faults)
    return subprocess.Popen(
        ORCH + ["run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_stopped_run_resumes_with_the_same_command(ray_local, tmp_runs):
    # 8 epochs (256 steps): stopped just after step 50, the rerun trains the other ~200.
    # After step 50 the first run's rank 0 sleeps 0.25 s a step (ORCH_FAULTS), so a fast
    # machine cannot finish it between the checkpoint and the Ctrl-C taking effect.
    # Both commands join the session's Ray (--address), as on a cluster: an embedded Ray's
    # start and stop cost ~7 s a command. The driver-kill test in test_reliability.py runs the
    # same command on an embedded Ray, and `make demo` does too.
    from orchestrator import runtime

    args = [
        str(ROOT / "jobs/mnist_mlp.yaml"),
        "train.epochs=8",
        "checkpoint.every_steps=50",
        f"storage_path={tmp_runs}",
        "name=resume",
        "resources.workers=2",
        "--address",
        runtime.local_address(),
    ]
    run_dir = tmp_runs / "resume"
    proc = _orch_run(args, faults={"slow_after_step": 50, "sleep_s": 0.25})
    deadline = time.time() + 240
    while time.time() < deadline and not (run_dir / "checkpoint_000050" / "_COMPLETE").exists():
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    assert (run_dir / "checkpoint_000050").exists(), "no checkpoint within 240 s"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    first = [r for r in ledger.latest_by_run(tmp_runs) if r["run_name"] == "resume"]
    assert first[-1]["status"] == "STOPPED", out
    stopped_at = max(r["step"] for r in read_metrics(run_dir))
    assert stopped_at < 8 * 32, "the run finished before it could be stopped"

    proc = _orch_run(args)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "resuming from checkpoint_" in " ".join(out.split())
    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "no step twice after resume"
    assert steps[-1] == 8 * 32
    runs = [r for r in ledger.latest_by_run(tmp_runs) if r["run_name"] == "resume"]
    assert [r["status"] for r in runs] == ["STOPPED", "SUCCEEDED"]
    done = json.loads(runs[-1]["metrics"])
    assert done["accuracy"] > 0.9

    # The same command once more, on a finished run: it resumes from the final checkpoint,
    # trains nothing, adds no row and reports the finished run's metrics (not a NaN loss).
    proc = _orch_run(args)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert [r["step"] for r in read_metrics(run_dir)] == steps
    runs = [r for r in ledger.latest_by_run(tmp_runs) if r["run_name"] == "resume"]
    assert [r["status"] for r in runs] == ["STOPPED", "SUCCEEDED", "SUCCEEDED"]
    again = json.loads(runs[-1]["metrics"])
    assert again["loss"] == done["loss"] and again["accuracy"] == done["accuracy"]


def test_validate_reports_three_mistakes_and_starts_no_ray(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nworkload: mnist_mlp\nresources:\n  workers: -1\n  cpu_per_worker: 1\n"
        "train:\n  lr: fast\n"
    )
    code = (
        "import sys\n"
        "from orchestrator.cli import app\n"
        'try:\n    app(["validate", sys.argv[1]])\n'
        "except SystemExit as e:\n    print('EXIT', e.code); print('RAY', 'ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    for path in ("resources.workers", "resources.cpu_per_worker", "train.lr"):
        assert path in text
    assert "EXIT 2" in text
    assert "RAY False" in text
