"""`orch up` / `orch down` (orchestrator/localhead.py): a persistent local head that a later
`orch run` joins instead of starting its own Ray, and that `orch down` stops whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
ORCH = [sys.executable, "-m", "orchestrator.cli"]


def _orch(args, env, timeout=300):
    return subprocess.run(
        [*ORCH, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_up_run_joins_the_head_and_down_stops_it(tmp_path):
    env = {**os.environ, "ORCH_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    up = _orch(["up", "--num-cpus", "2"], env)
    state_file = tmp_path / "home" / "head.json"
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads(state_file.read_text())
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"  # it holds the token
        head = psutil.Process(state["pid"])
        tree = [head, *head.children(recursive=True)]
        # A second `orch up` is refused while the first is up (exit 7, conflict).
        again = _orch(["up"], env)
        assert again.returncode == 7 and "already up" in again.stdout + again.stderr

        storage = tmp_path / "runs"
        run = _orch(
            [
                "run",
                "jobs/mnist_mlp.yaml",
                "train.epochs=1",
                "resources.workers=1",
                f"storage_path={storage}",
                "name=onhead",
            ],
            env,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert f"joining the local head at {state['address']}" in run.stdout
        summary = json.loads((storage / "onhead" / "summary.json").read_text())
        assert summary["status"] == "SUCCEEDED"
        assert head.is_running()  # the run left the head up for the next one
    finally:
        down = _orch(["down"], env)
    assert down.returncode == 0 and "stopped the local head" in down.stdout, down.stderr
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert not state_file.exists() and not (tmp_path / "home" / "head_token").exists()
    # Without a head, `orch down` says so and succeeds.
    none = _orch(["down"], env)
    assert none.returncode == 0 and "no local head is up" in none.stdout
