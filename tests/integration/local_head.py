"""A real `ray start --head` for tests: loopback addresses, free ports, its own temp dir and
its own token, stopped by killing only the processes it started (never `ray stop`, which
would end every Ray on the machine, other tests' included).

    with LocalHead(num_cpus=3) as head:
        head.dashboard_url        # http://127.0.0.1:PORT (Jobs API)
        head.env                  # RAY_AUTH_MODE=token + RAY_AUTH_TOKEN for clients
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port(start: int, span: int = 400) -> int:
    """A port free on loopback and on every interface, searched upwards from `start`."""
    for port in range(start, start + span):
        try:
            for host in ("127.0.0.1", "0.0.0.0"):
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port in {start}..{start + span}")


class LocalHead:
    def __init__(
        self,
        num_cpus: int = 2,
        gcs_port_from: int = 6380,
        autoscaling_config: str | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout_s: float = 150.0,
    ):
        self.num_cpus = num_cpus
        self.gcs_port_from = gcs_port_from
        self.autoscaling_config = autoscaling_config
        self.extra_env = extra_env or {}
        self.start_timeout_s = start_timeout_s
        self.token = secrets.token_hex(24)
        self.proc: subprocess.Popen | None = None
        self.procs: dict[int, object] = {}  # pid -> psutil.Process (which guards pid reuse)
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="orch-head-", dir="/tmp")
        self._pick_ports()  # known before start: an autoscaling config may need the GCS address

    # -- addresses ------------------------------------------------------------------------------
    def _pick_ports(self) -> None:
        self.gcs_port = free_port(self.gcs_port_from)
        self.dashboard_port = free_port(8300 + (self.gcs_port - 6300) % 200)
        self.agent_port = free_port(52400 + (self.gcs_port - 6300) % 200)
        self.client_port = free_port(9100 + (self.gcs_port - 6300) % 200)  # below worker ports

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients of this head (and for the head itself)."""
        env = dict(os.environ)
        for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS"):
            env.pop(k, None)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            # Else Ray swaps --node-ip-address=127.0.0.1 for the machine's routable
            # address (services.resolve_ip_for_localhost) and its agents listen there.
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        )
        return env

    def state_list(self, resource: str, detail: bool = False, **filters) -> list[dict]:
        """Ray's state API over HTTP with the head's token: `/api/v0/{resource}` (actors,
        nodes, placement_groups, ...), what `ray.util.state.list_*` calls. filters:
        key=(predicate, value), e.g. state=("!=", "DEAD"). Not ray.util.state itself: in a
        process that runs its own embedded Ray it queries that Ray whatever address it gets."""
        import json
        import urllib.parse

        params = [("limit", "10000")] + ([("detail", "1")] if detail else [])
        for key, (predicate, value) in filters.items():
            params += [
                ("filter_keys", key),
                ("filter_predicates", predicate),
                ("filter_values", value),
            ]
        req = urllib.request.Request(
            f"{self.dashboard_url}/api/v0/{resource}?{urllib.parse.urlencode(params)}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
        assert body.get("result") is True, f"state API: {body.get('msg')}"
        out = body["data"]["result"]
        assert not out.get("partial_failure_warning"), out["partial_failure_warning"]
        return out["result"]

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, attempts: int = 3) -> LocalHead:
        """Start the head; on a loaded machine Ray's fixed 30 s raylet-registration timeout can
        fail `ray start`, so a failed start is retried on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except RuntimeError:
                self.stop(remove_temp=attempt == attempts)
                if attempt == attempts:
                    raise
                self._pick_ports()
        return self

    def _start_once(self) -> LocalHead:
        env = self.env
        # Inherited by the head's workers: Ray code in them that finds its cluster from the
        # environment (the state API in Ray Train's PlacementGroupCleaner) would otherwise
        # fail with "Found multiple active Ray instances" next to other Rays on this machine.
        env["RAY_ADDRESS"] = self.gcs_address
        env.update(self.extra_env)
        cmd = [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={self.agent_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            "--object-store-memory=200000000",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ]
        if self.autoscaling_config:
            cmd.append(f"--autoscaling-config={self.autoscaling_config}")
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=open(self.log_path, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self._remember_children()
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}:\n{self.log_tail()}")
            # Up = `ray start` says so (its raylet registered) and the Jobs API answers.
            if "Ray runtime started" in self.log_tail(10**6) and self._dashboard_answers():
                return self
            time.sleep(0.5)
        raise RuntimeError(f"head not up after {self.start_timeout_s:.0f}s:\n{self.log_tail()}")

    def _dashboard_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.dashboard_url + "/api/version", timeout=2)
            return True
        except urllib.error.HTTPError:  # 401 without a token: it is up
            return True
        except OSError:
            return False

    def _remember_children(self) -> None:
        try:
            import psutil

            if self.proc is not None:
                for p in psutil.Process(self.proc.pid).children(recursive=True):
                    self.procs.setdefault(p.pid, p)
        except Exception:  # noqa: BLE001 - the process tree changes while we look
            pass

    def diagnose(self, n: int = 1500) -> str:
        """For assertion messages: is the head alive, does the Jobs API answer, recent logs."""
        alive = self.proc is not None and self.proc.poll() is None
        parts = [
            f"head: ray start {'alive' if alive else 'EXITED'}; Jobs API "
            f"{'answers' if self._dashboard_answers() else 'does not answer'} "
            f"at {self.dashboard_url}",
            "--- ray start ---",
            self.log_tail(n),
        ]
        logs = Path(self.temp_dir) / "session_latest" / "logs"
        for name in ("ray_process_exit.log", "dashboard.err", "dashboard.log", "raylet.err"):
            f = logs / name
            if f.is_file() and f.stat().st_size:
                parts += [f"--- {name} ---", f.read_text(errors="replace")[-n:]]
        return "\n".join(parts)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def stop(self, remove_temp: bool = True) -> None:
        """SIGTERM `ray start --block` (it stops its Ray processes), then SIGKILL any of the
        processes it started that are left (fake autoscaler nodes, workers)."""
        import psutil

        if self.proc is None:
            return
        self._remember_children()
        # A test head keeps nothing worth a graceful exit: `ray start --block` took 20-30 s to
        # stop on SIGTERM alone, so every process it started gets SIGTERM at once, and
        # whatever is left after 1 s gets SIGKILL (5 s made each head's teardown ~5.6 s).
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        for p in self._alive():
            try:
                p.terminate()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        deadline = time.monotonic() + 1
        left = self._alive()
        while left and time.monotonic() < deadline:
            for p in left:
                try:
                    p.terminate()
                except psutil.Error:
                    pass
            time.sleep(0.5)
            left = self._alive()
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc = None
        self.procs.clear()
        if remove_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _alive(self):
        import psutil

        out = []
        for p in self.procs.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
