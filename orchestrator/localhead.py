"""A persistent local Ray head that later runs reuse: `orch up` / `orch down`.

    orch up                      # a local head on 127.0.0.1 (all CPUs, its dashboard, a token)
    orch run jobs/mnist_mlp.yaml # joins it: no Ray start or stop per run
    orch down                    # stops what `orch up` started, and nothing else

Without it every `orch run` starts an embedded Ray and stops it at the end (seconds each way on
a small machine: bench/cold_start.py). With it, runs join the head as they would a cluster's,
the way `ray start --head` users work. The head is a real `ray start --head --block` in its own
session, on loopback and free ports, with token auth as Ray 2.60 clusters have; its state
(pid, address, token) is in $ORCH_HOME/head.json (default ~/.orch), readable by its owner only.
An explicit --address or RAY_ADDRESS always wins; a head that died is forgotten.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import ExitCode, OrchestratorError
from orchestrator.host import end, free_port

# `ray start` on loopback: Ray swaps --node-ip-address=127.0.0.1 for the machine's routable
# address unless this is "0" (cluster/local_cluster.py and tests/integration/local_head.py do
# the same); clients of the head need it too.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class HeadError(OrchestratorError):
    """`orch up` could not start the head, or one is already up."""

    exit_code = ExitCode.CONFLICT


def home() -> Path:
    return Path(os.environ.get("ORCH_HOME") or "~/.orch").expanduser()


def state_file() -> Path:
    return home() / "head.json"


def token_file() -> Path:
    """The head's token alone, for RAY_AUTH_TOKEN_PATH (other Ray clients: ray job submit)."""
    return home() / "head_token"


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def _alive(state: dict[str, Any]) -> bool:
    try:
        import psutil

        p = psutil.Process(int(state["pid"]))
        return p.create_time() == state.get("pid_created") and p.status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone, or not ours any more (pid reused)
        return False


def find() -> dict[str, Any] | None:
    """The head `orch up` started, if it is still up (its process and its GCS port); None
    otherwise (a head that died is forgotten)."""
    f = state_file()
    try:
        state = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if _alive(state) and _port_open(state["address"]):
        return state
    if not _alive(state):
        f.unlink(missing_ok=True)
    return None


def client_env(state: dict[str, Any]) -> dict[str, str]:
    """What a client of the head needs in its environment (token auth, loopback)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": state["token"], **LOOPBACK_ENV}


def up(num_cpus: int | None = None, dashboard: bool = True, timeout_s: float = 120.0) -> dict:
    """Start the head (refused when one is up); its state, as find() returns it."""
    import psutil

    if find() is not None:
        raise HeadError(f"a local head is already up ({state_file()}); `orch down` stops it")
    ports = {k: free_port() for k in ("gcs", "dashboard", "agent", "client")}
    token = secrets.token_hex(24)
    temp = tempfile.mkdtemp(prefix="orch-up-", dir="/tmp")  # short: Ray's unix sockets
    address = f"127.0.0.1:{ports['gcs']}"
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={ports['gcs']}",
        f"--include-dashboard={'true' if dashboard else 'false'}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--dashboard-agent-listen-port={ports['agent']}",
        f"--ray-client-server-port={ports['client']}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, **LOOPBACK_ENV}
    # Ray code in the head's workers finds its own cluster from RAY_ADDRESS, not by guessing
    # among every Ray on this machine.
    env["RAY_ADDRESS"] = address
    log = Path(temp) / "ray-start.log"
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - the head's process keeps it
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HeadError(
                f"ray start exited {proc.returncode}; its log ({log}):\n"
                + log.read_text(errors="replace")[-3000:]
            )
        if "Ray runtime started" in log.read_text(errors="replace") and _port_open(address):
            break
        time.sleep(0.3)
    else:
        _stop_tree(proc.pid)
        raise HeadError(f"the head was not up after {timeout_s:.0f} s; its log: {log}")
    state = {
        "pid": proc.pid,
        "pid_created": psutil.Process(proc.pid).create_time(),
        "address": address,
        "token": token,
        "dashboard_url": f"http://127.0.0.1:{ports['dashboard']}" if dashboard else None,
        "temp_dir": temp,
        "log": str(log),
        "num_cpus": num_cpus,
        "started": time.time(),
    }
    home().mkdir(parents=True, exist_ok=True)
    for f, text in ((token_file(), token), (state_file(), json.dumps(state, indent=1))):
        f.touch(mode=0o600)
        os.chmod(f, 0o600)  # both hold the token
        f.write_text(text)
    return state


def _stop_tree(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM `ray start --block` and every process it started, SIGKILL what is left."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    end(procs, grace_s, term_first=True)


def down() -> dict[str, Any] | None:
    """Stop the head `orch up` started (only its processes); its state, or None if none."""
    import shutil

    f = state_file()
    try:
        state = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if _alive(state):
        _stop_tree(int(state["pid"]))
    f.unlink(missing_ok=True)
    token_file().unlink(missing_ok=True)
    shutil.rmtree(state.get("temp_dir") or "", ignore_errors=True)
    return state
