"""`workload: script`: an existing torchrun-style training script, run unchanged on N Ray Train
workers.

    workload: script
    resources: {workers: 2}
    train:
      script: train.py                 # relative to the spec's folder (or the current folder)
      args: ["--epochs", "3"]          # its own command-line arguments
      env: {MY_SETTING: "1"}           # more environment variables, if it wants any

Each worker starts `python SCRIPT ARGS...` as a child process with the environment torchrun
gives a script: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,
MASTER_PORT (a fresh rendezvous on rank 0's node, not Ray's own process group), and
TORCHELASTIC_RESTART_COUNT (0, then 1 after a restart). Plus:

    ORCH_CHECKPOINT_DIR   a folder the script may save to; a later attempt (after a worker or
                          node failure, or rerunning the same command) gets the same folder
                          back, so a script that resumes from what it finds there resumes
    ORCH_RUN_DIR          the run directory (a path or a URI)

The script's stdout and stderr stream to `orch run` (and `orch logs` on a cluster), each line
prefixed with its rank. A line that is a JSON object with a numeric "step" (rank 0's) becomes a
row of the run's metrics, so `orch report` plots what the script logs:
`print(json.dumps({"step": step, "loss": loss}), flush=True)`. The exit code decides: non-zero
fails the attempt with the script's last lines as the cause (Ray Train restarts the workers
while `failure.max_failures` allows, and the script finds its checkpoints again). The child is
killed with its worker: it never outlives the run.

On a URI run dir (s3://) ORCH_CHECKPOINT_DIR is a local folder that rank 0 uploads to the run
dir's `script_checkpoints/` every few seconds and at the end, and every attempt downloads first.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import rundir

CHECKPOINT_ENV = "ORCH_CHECKPOINT_DIR"
CHECKPOINTS = "script_checkpoints"
LAST_LINES = 30


class Args(BaseModel):
    """The `train:` section of a script workload."""

    model_config = ConfigDict(extra="forbid")

    script: str = Field(..., min_length=1, description="The script, e.g. train.py.")
    args: list[str] = Field(default_factory=list, description="Its command-line arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="More environment variables.")
    python: str | None = Field(None, description="The interpreter (default: the workers').")


def _find(script: str, dirs: list[Path]) -> tuple[Path | None, list[str]]:
    tried = []
    for d in dirs:
        f = (d / script).expanduser().resolve()
        tried.append(str(f))
        if f.is_file():
            return f, tried
    return None, tried


def check_spec(data: dict[str, Any], dirs: list[Path]) -> list:
    """The script must exist (in the spec's folder or the current folder)."""
    from orchestrator.errors import FieldError

    script = (data.get("train") or {}).get("script")
    if not isinstance(script, str):
        return []
    found, tried = _find(script, dirs)
    if found is None:
        return [
            FieldError("train.script", f"no such file; looked at {'; '.join(tried)}", repr(script))
        ]
    return []


def resolve_train(train: dict[str, Any], dirs: list[Path]) -> dict[str, Any]:
    """The script as an absolute path (plan() turns it into what the workers see)."""
    found, _ = _find(train["script"], dirs)
    return {**train, "script": str(found)} if found else train


# -- in each worker ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Run in the child: SIGKILL it when the worker process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _rendezvous(sess) -> tuple[str, int]:
    """Rank 0's node address and a free port there, for the script's own process group."""
    import socket

    if sess.is_main:
        import ray

        host = ray.util.get_node_ip_address() if sess.in_ray else "127.0.0.1"
        from orchestrator.host import free_port

        mine = (host, free_port())
    else:
        mine = None
    return (
        next(x for x in sess.all_gather_object(mine) if x is not None)
        if sess.world_size > 1
        else (mine or (socket.gethostname(), 29500))
    )


class _CheckpointSync(threading.Thread):
    """Rank 0 on a URI run dir: the local checkpoint folder uploaded every `every` s."""

    def __init__(self, local: Path, dest: str, every: float = 5.0):
        super().__init__(daemon=True, name="orch-script-checkpoints")
        self.local, self.dest, self.every = local, dest, every
        self.sent: dict[str, float] = {}
        self.stop_event = threading.Event()

    def sync(self) -> None:
        for f in self.local.rglob("*"):
            if f.is_file() and self.sent.get(str(f)) != f.stat().st_mtime:
                mtime = f.stat().st_mtime
                rundir.write_bytes(
                    rundir.join(self.dest, str(f.relative_to(self.local))), f.read_bytes()
                )
                self.sent[str(f)] = mtime

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                print(f"[orch] script checkpoints not uploaded yet: {exc}", flush=True)


def _checkpoint_dir(sess) -> tuple[Path, _CheckpointSync | None]:
    run_dir = sess.run_dir
    if not run_dir:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="orch-script-")), None
    if not rundir.is_uri(run_dir):
        d = Path(run_dir) / CHECKPOINTS
        d.mkdir(parents=True, exist_ok=True)
        return d, None
    import tempfile

    local = Path(tempfile.mkdtemp(prefix="orch-script-ckpt-"))
    remote = rundir.join(run_dir, CHECKPOINTS)
    if rundir.exists(remote):
        rundir.download_dir(remote, local)
    sync = _CheckpointSync(local, remote) if sess.is_main else None
    return local, sync


def train_loop(config: dict[str, Any]) -> dict[str, Any]:
    from orchestrator import worker

    args = Args.model_validate(config.get("train", {}))
    sess = worker.setup(config)
    attempt = (
        len(rundir.read_attempts(sess.run_dir, config.get("run_id", "")))
        if sess.run_dir and config.get("run_id")
        else 0
    )
    sess.record_attempt(None)
    addr, port = _rendezvous(sess)
    ckpt, sync = _checkpoint_dir(sess)
    local_rank, local_world = sess.local_rank, 1
    group_rank = 0
    if sess.in_ray:
        import ray.train

        ctx = ray.train.get_context()
        local_world, group_rank = ctx.get_local_world_size(), ctx.get_node_rank()
    env = {
        **os.environ,
        **args.env,
        "RANK": str(sess.rank),
        "WORLD_SIZE": str(sess.world_size),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "GROUP_RANK": str(group_rank),
        "MASTER_ADDR": addr,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RESTART_COUNT": str(attempt),
        CHECKPOINT_ENV: str(ckpt),
        "ORCH_RUN_DIR": str(sess.run_dir or ""),
    }
    from orchestrator import workloads

    script = workloads.on_worker(args.script)
    cmd = [args.python or sys.executable, "-u", str(script), *args.args]
    last: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
    final: dict[str, Any] = {}
    if sync is not None:
        sync.start()
    # Where `orch run` started (the unpacked --working-dir on a cluster), as torchrun would
    # run it: Ray Train moves its workers' own cwd to an artifacts folder.
    cwd = workloads.on_worker(config["launch_dir"]) if config.get("launch_dir") else None
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=_die_with_parent,
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            last.append(line)
            print(f"[rank {sess.rank}] {line}", flush=True)
            row = _metrics_row(line)
            if row is not None and sess.is_main:
                sess.append_row(row)
                final = {k: v for k, v in row.items() if k != "time"}
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        if sync is not None:
            sync.stop_event.set()
            sync.sync()
        sess.flush_rows()
    if code != 0:
        tail = "\n".join(last)
        raise RuntimeError(
            f"script {args.script} exited with code {code} on rank {sess.rank}; "
            f"its last lines:\n{tail}"
        )
    return final


def _metrics_row(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    if not isinstance(step, int | float) or isinstance(step, bool):
        return None
    return {**row, "time": time.time()}
