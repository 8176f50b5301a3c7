"""A real multi-node Ray cluster and an S3-compatible server on this machine, for trying the
cluster path end to end (and for the tests that prove it).

    make cluster-up                      # = python cluster/local_cluster.py up
    source .cluster/env.sh               # the exports a client needs (token, Jobs API, S3)
    orch submit jobs/mnist_mlp.yaml storage_path=s3://orch/runs --follow
    ray job submit --working-dir . -- orch run jobs/mnist_mlp.yaml storage_path=s3://orch/runs
    orch runs --storage-path s3://orch/runs
    python cluster/local_cluster.py status
    python cluster/local_cluster.py kill-node 1      # lose a node: SIGKILL its raylet
    python cluster/local_cluster.py add-node         # a new node joins
    make cluster-down                    # = python cluster/local_cluster.py down

What `up` starts, each a real process bound to 127.0.0.1 only:

- a Ray head (`ray start --head --num-cpus 0`): the GCS, the dashboard with the Jobs API, and
  the drivers of submitted jobs; no CPUs, so training never runs there;
- two worker nodes (`ray start --address ... --num-cpus 1`), each its own raylet with its own
  ports and a custom resource `node1`, `node2`, ... naming it;
- moto's S3 server (`moto[server]`) with a bucket (`orch` by default), the object storage
  every node reaches through AWS_ENDPOINT_URL, as EC2 nodes reach S3.

Token authentication is on, as on a cluster started from Ray 2.60: the token is written to
`.cluster/auth_token` and `env.sh` points RAY_AUTH_TOKEN_PATH at it. The nodes are started
with the same S3 settings in their environment, so Ray Train's and orch's workers reach the
bucket. Only the processes this script started are ever stopped (by their ids, recorded in
`.cluster/state.json`): never `ray stop`, which ends every Ray on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_STATE = ROOT / ".cluster"
# Ray's own default ports (GCS, dashboard, client server, dashboard agent) and its default
# worker-port range: never handed to one of our nodes.
RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365, 52366, 8076, 8077}
RAY_WORKER_RANGE = range(10002, 20000)
PORTS_PER_NODE = 8
WORKER_PORTS_PER_NODE = 60
S3_KEY = "testing"  # moto accepts any credentials; these name the local server's


# Everything stays on loopback. Ray turns --node-ip-address=127.0.0.1 (and a client's
# 127.0.0.1 address) into the machine's routable address (services.resolve_ip_for_localhost)
# unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps the loopback address but also makes
# `ray start --address` refuse to start a worker node. So every process of the cluster gets
# that variable (the agents, drivers and workers the raylets start resolve to 127.0.0.1), and
# `ray start` itself runs with its refusal and its own address swap turned off.
_RAY_START_ON_LOOPBACK = (
    "import sys; import ray._private.ray_constants as c; import ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _free(port: int) -> bool:
    if port in RAY_DEFAULT_PORTS or port in RAY_WORKER_RANGE:
        return False
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _free_block(start: int, size: int, taken: set[int]) -> int:
    """The first port >= start such that `size` consecutive ports are free and not taken."""
    port = start
    while port + size < 65000:
        block = range(port, port + size)
        if not taken.intersection(block) and all(_free(p) for p in block):
            return port
        port += size
    raise RuntimeError(f"no {size} free consecutive ports from {start}")


class LocalCluster:
    """The cluster whose state lives in `state_dir` (default: .cluster in the repository)."""

    def __init__(self, state_dir: str | Path = DEFAULT_STATE):
        self.dir = Path(state_dir).resolve()
        self.state_file = self.dir / "state.json"
        self.state: dict = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )

    # -- what a client needs ---------------------------------------------------------------

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.state['dashboard_port']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.state['gcs_port']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.state['s3_port']}"

    @property
    def bucket(self) -> str:
        return self.state["bucket"]

    def s3_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probing off EC2
        }

    def client_env(self) -> dict[str, str]:
        """The exports of env.sh: token auth, the Jobs API, the S3 server."""
        return {
            **LOOPBACK_ENV,  # a client's ray.init("127.0.0.1:PORT") stays on loopback too
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.dir / "auth_token"),
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            "ORCH_QUEUE_ADDRESS": self.gcs_address,  # orch queue / orch submit --queue
            **self.s3_env(),
        }

    def env(self) -> dict[str, str]:
        """This process's environment with the client exports (and no stray Ray address)."""
        env = dict(os.environ)
        for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            env.pop(k, None)
        env.update(self.client_env())
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def up(
        self,
        workers: int = 2,
        cpus: int = 1,
        bucket: str = "orch",
        timeout_s: float = 180.0,
        ray: bool = True,
    ) -> LocalCluster:
        """Start the S3 server with its bucket and (unless `ray` is False) the Ray nodes."""
        if self.state.get("nodes") and self.alive():
            raise RuntimeError(
                f"a cluster is already up ({self.state_file}); "
                "`python cluster/local_cluster.py down` first"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "auth_token").write_text(secrets.token_hex(24))
        os.chmod(self.dir / "auth_token", 0o600)
        temp = Path("/tmp") / f"orch-cluster-{os.getpid()}"  # short: Ray's unix sockets
        temp.mkdir(exist_ok=True)
        taken: set[int] = set()
        base = _free_block(24000 + (os.getpid() % 200) * 10, 4, taken)
        taken |= set(range(base, base + 4))
        s3 = _free_block(base + 4, 1, taken)
        taken.add(s3)
        self.state = {
            "gcs_port": base,
            "dashboard_port": base + 1,
            "client_port": base + 2,
            "s3_port": s3,
            "bucket": bucket,
            "temp_dir": str(temp),
            "nodes": [],
            "cpus": cpus,
            "taken": sorted(taken),
        }
        self._save()
        self._start_s3()
        if ray:
            self._start_node(head=True, cpus=0, timeout_s=timeout_s)
            for _ in range(workers):
                self.add_node(cpus=cpus, timeout_s=timeout_s)
        self.write_env()
        return self

    def _env_for_nodes(self) -> dict[str, str]:
        env = self.env()
        env["RAY_ADDRESS"] = self.gcs_address  # Ray code in the nodes' workers finds its own
        return env

    def _start_node(self, head: bool, cpus: int, timeout_s: float) -> dict:
        taken = set(self.state["taken"])
        first = _free_block(max(taken) + 1, PORTS_PER_NODE + WORKER_PORTS_PER_NODE, taken)
        ports = range(first, first + PORTS_PER_NODE + WORKER_PORTS_PER_NODE)
        self.state["taken"] = sorted(taken | set(ports))
        index = len(self.state["nodes"])
        name = "head" if head else f"node{index}"
        log = Path(self.state["temp_dir"]) / f"{name}-{int(time.time())}.log"
        cmd = [
            sys.executable,
            "-c",
            _RAY_START_ON_LOOPBACK,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            "--object-store-memory=150000000",
            "--disable-usage-stats",
            f"--node-manager-port={first}",
            f"--object-manager-port={first + 1}",
            f"--dashboard-agent-listen-port={first + 2}",
            f"--dashboard-agent-grpc-port={first + 3}",
            f"--metrics-export-port={first + 4}",
            f"--runtime-env-agent-port={first + 5}",
            f"--min-worker-port={first + PORTS_PER_NODE}",
            f"--max-worker-port={first + PORTS_PER_NODE + WORKER_PORTS_PER_NODE - 1}",
        ]
        if head:
            cmd += [
                "--head",
                f"--port={self.state['gcs_port']}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.state['dashboard_port']}",
                f"--ray-client-server-port={self.state['client_port']}",
                f"--temp-dir={self.state['temp_dir']}",
                "--include-dashboard=true",
            ]
        else:
            # Each node its own temp dir, as each machine of a real cluster has its own /tmp.
            # Shared (Ray's default: the head's), the nodes share one runtime_resources
            # folder, and a worker node's runtime-env agent, unpacking or garbage-collecting
            # a job's working_dir there, deletes the folder the job's driver runs in on the
            # head: the first job on a new cluster lost its cwd (os.getcwd() failed; importing
            # torch then died with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so").
            node_temp = Path(self.state["temp_dir"]) / name
            node_temp.mkdir(exist_ok=True)
            cmd += [
                f"--address={self.gcs_address}",
                f"--resources={json.dumps({name: 1})}",
                f"--temp-dir={node_temp}",
            ]
        proc = subprocess.Popen(
            cmd,
            env=self._env_for_nodes(),
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        node = {
            "name": name,
            "pid": proc.pid,
            "log": str(log),
            "node_manager_port": first,
            "head": head,
        }
        self.state["nodes"].append(node)
        self._save()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name}: ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            if "Ray runtime started" in log.read_text(errors="replace") and (
                not head or self._dashboard_answers()
            ):
                node["raylet_pid"] = self._raylet_pid(proc.pid)
                self._save()
                return node
            time.sleep(0.5)
        raise RuntimeError(f"{name} not up after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")

    def add_node(self, cpus: int | None = None, timeout_s: float = 180.0) -> dict:
        """A new worker node joins the running cluster."""
        return self._start_node(
            head=False, cpus=self.state["cpus"] if cpus is None else cpus, timeout_s=timeout_s
        )

    def worker_nodes(self, alive_only: bool = True) -> list[dict]:
        return [
            n
            for n in self.state.get("nodes", [])
            if not n["head"] and (not alive_only or _alive(n.get("raylet_pid")))
        ]

    def kill_node(self, name: str) -> dict:
        """Lose a node: SIGKILL its raylet (its workers die with it), then its `ray start`."""
        name = f"node{name}" if name.isdigit() else name
        node = next((n for n in self.state["nodes"] if n["name"] == name), None)
        if node is None or node["head"]:
            workers = ", ".join(n["name"] for n in self.worker_nodes(alive_only=False)) or "none"
            raise ValueError(f"no worker node {name!r} in {self.dir}; worker nodes: {workers}")
        for pid in (node.get("raylet_pid"), node["pid"]):
            _kill_tree(pid, signal.SIGKILL)
        return node

    def pause_s3(self) -> None:
        """The S3 server stops answering (SIGSTOP) until resume_s3()."""
        os.kill(self.state["s3_pid"], signal.SIGSTOP)

    def resume_s3(self) -> None:
        os.kill(self.state["s3_pid"], signal.SIGCONT)

    def down(self) -> None:
        """Stop every process this cluster started (the nodes, then the S3 server)."""
        for node in reversed(self.state.get("nodes", [])):
            _kill_tree(node["pid"], signal.SIGTERM)
            _kill_tree(node.get("raylet_pid"), signal.SIGTERM)
        time.sleep(1)
        for node in reversed(self.state.get("nodes", [])):
            _kill_tree(node["pid"], signal.SIGKILL)
            _kill_tree(node.get("raylet_pid"), signal.SIGKILL)
        if self.state.get("s3_pid"):
            try:
                os.kill(self.state["s3_pid"], signal.SIGCONT)
            except OSError:
                pass
            _kill_tree(self.state["s3_pid"], signal.SIGKILL)
        if self.state.get("temp_dir"):
            import shutil

            shutil.rmtree(self.state["temp_dir"], ignore_errors=True)
        if self.state_file.exists():
            self.state_file.unlink()
        self.state = {}

    def alive(self) -> bool:
        if not self.state.get("nodes"):
            return _alive(self.state.get("s3_pid"))
        return any(_alive(n.get("raylet_pid") or n["pid"]) for n in self.state.get("nodes", []))

    # -- the S3 server ---------------------------------------------------------------------

    def _start_s3(self) -> None:
        log = Path(self.state["temp_dir"]) / "s3.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.state["s3_port"]),
            ],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.state["s3_pid"] = proc.pid
        self._save()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.s3_endpoint, timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"S3 server not up: {log.read_text()[-2000:]}")
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_KEY,
            region_name="us-east-1",
        ).create_bucket(Bucket=self.state["bucket"])

    # -- plumbing --------------------------------------------------------------------------

    def _dashboard_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.dashboard_url + "/api/version", timeout=2)
            return True
        except urllib.error.HTTPError:  # 401 without a token: it is up
            return True
        except OSError:
            return False

    @staticmethod
    def _raylet_pid(start_pid: int) -> int | None:
        import psutil

        for _ in range(20):
            try:
                for p in psutil.Process(start_pid).children(recursive=True):
                    if p.name() == "raylet" or (p.cmdline() or [""])[0].endswith("/raylet"):
                        return p.pid
            except psutil.Error:
                return None
            time.sleep(0.25)
        return None

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def write_env(self) -> Path:
        lines = [f"export {k}={v}" for k, v in self.client_env().items()]
        lines.append(f"export ORCH_STORAGE=s3://{self.bucket}/runs")
        path = self.dir / "env.sh"
        path.write_text("\n".join(lines) + "\n")
        return path

    def describe(self) -> str:
        nodes = ", ".join(
            f"{n['name']} ({'up' if _alive(n.get('raylet_pid')) else 'gone'})"
            for n in self.state.get("nodes", [])
        )
        return (
            f"Ray head: GCS {self.gcs_address}, Jobs API {self.dashboard_url}\n"
            f"nodes: {nodes}\n"
            f"S3: {self.s3_endpoint}, bucket s3://{self.bucket}\n"
            f"exports: source {self.dir / 'env.sh'}"
        )


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone
        return False


def _kill_tree(pid: int | None, sig: int) -> None:
    if not pid:
        return
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE),
        help="Where state.json, env.sh and auth_token live (default: .cluster in the repository).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="Start the head, the worker nodes and the S3 server.")
    up.add_argument("--workers", type=int, default=2, help="Worker nodes (default 2).")
    up.add_argument("--cpus", type=int, default=1, help="CPUs per worker node (default 1).")
    up.add_argument("--bucket", default="orch", help="The bucket to create (default orch).")
    sub.add_parser("down", help="Stop every process the cluster started.")
    sub.add_parser("status", help="What is up, and the exports.")
    sub.add_parser("add-node", help="A new worker node joins.")
    kill = sub.add_parser("kill-node", help="Lose a node: SIGKILL its raylet.")
    kill.add_argument("name", help="node1, node2, ... or 1, 2, ... (see status)")
    a = ap.parse_args(argv)
    c = LocalCluster(a.state_dir)
    if a.cmd == "up":
        c.up(workers=a.workers, cpus=a.cpus, bucket=a.bucket)
        print(c.describe())
        print("\n".join(f"export {k}={v}" for k, v in c.client_env().items()))
    elif a.cmd == "down":
        c.down()
        print("cluster stopped")
    elif not c.state:
        print(f"no cluster in {c.dir} (python cluster/local_cluster.py up)", file=sys.stderr)
        return 2
    elif a.cmd == "status":
        print(c.describe())
    elif a.cmd == "add-node":
        print(f"{c.add_node()['name']} joined")
    elif a.cmd == "kill-node":
        try:
            node = c.kill_node(a.name)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{node['name']}: raylet killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
