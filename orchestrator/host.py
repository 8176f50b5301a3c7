"""This machine: free ports outside Ray's own, when a process started, and ending processes.

Shared by the embedded Ray (runtime.py), `orch up`'s head (localhead.py), the start-up
breakdown (launch/lifecycle.py, worker/session.py) and script workloads' rendezvous.
"""

from __future__ import annotations

import os
import socket
import time

# Ports Ray takes by default for its own components (GCS, dashboard, client server, dashboard
# agent HTTP and gRPC, metrics): a Ray component handed one of them collides with another Ray
# on this machine ("address already in use by other components", once in ~60 launches). Ray's
# default worker-port range too.
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365, 52366, 8076, 8077, 44217, 44227})
RAY_WORKER_PORTS = range(10002, 20000)


def free_port(tries: int = 50) -> int:
    """A free port on 127.0.0.1 that is none of Ray's own default ports."""
    for _ in range(tries):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS and port not in RAY_WORKER_PORTS:
            return port
    raise RuntimeError(f"no free port outside Ray's defaults in {tries} tries")


def process_start(pid: int | str = "self") -> float | None:
    """Epoch seconds at which `pid` (default: this process) started, to about 10 ms; None off
    Linux.

    psutil's create_time() adds the process's start (in clock ticks since boot) to the boot
    time of /proc/stat, which is a whole second: its error reaches 1 s, the size of the
    start-up phases it would measure. This takes the process's age from /proc/uptime (10 ms
    resolution) and subtracts it from now.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        now = time.time()
        # Field 22 (starttime, in clock ticks), counted after the ')' that ends field 2.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return now - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def end(procs: list, grace_s: float, term_first: bool = False) -> list[str]:
    """End psutil processes: with `term_first`, SIGTERM them at once; wait `grace_s` for them
    to exit; SIGTERM (again) what is left, wait 2 s, SIGKILL the rest. Returns the names of
    those still alive after the grace."""
    import psutil

    if term_first:
        _signal(procs, "terminate")
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    names = []
    for p in alive:
        try:
            names.append(p.name())
        except psutil.Error:
            pass
    _signal(alive, "terminate")
    _gone, alive = psutil.wait_procs(alive, timeout=2.0)
    _signal(alive, "kill")
    return names


def _signal(procs: list, how: str) -> None:
    import psutil

    for p in procs:
        try:
            getattr(p, how)()
        except psutil.Error:
            pass
